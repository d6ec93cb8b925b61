/* gc/options.c - the collector's knobs, read once from the environment: one table, each with its
 * unit; a bad value gets one "cgc: " line and the default. man 7 cgc lists them. */
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "alloc/os.h"
#include "gc/gc.h"

NONROOT gc_options_t gc_opt;

#define DEFAULT_SIGNAL_OFFSET 4 /* SIGRTMIN+4: see signal_parse */

/* A whole number in [0, max] with nothing after it. */
static bool parse_uint(const char *s, uint64_t max, uint64_t *out)
{
	if (*s < '0' || *s > '9')
		return false;
	uint64_t v = 0;
	for (; *s >= '0' && *s <= '9'; s++) {
		if (v > (UINT64_MAX - 9) / 10)
			return false;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	if (*s || v > max)
		return false;
	*out = v;
	return true;
}

static void percent_parse(const char *v)
{
	uint64_t n;
	if (strcmp(v, "off") == 0)
		gc_opt.percent = -1;
	else if (parse_uint(v, 1000000, &n))
		gc_opt.percent = (int)n;
	else
		cgc_report("cgc: CGC_PERCENT=\"%s\" is not a whole number or \"off\"; using %d", v,
			   GC_DEFAULT_PERCENT);
}

/* Bytes: a whole number with an optional B, KiB, MiB, GiB or TiB suffix. */
static void memlimit_parse(const char *v)
{
	static const struct { const char *suffix; unsigned shift; } units[] = {
		{"", 0}, {"B", 0}, {"KiB", 10}, {"MiB", 20}, {"GiB", 30}, {"TiB", 40},
	};
	size_t digits = strspn(v, "0123456789");
	char num[32];
	if (digits > 0 && digits < sizeof num) {
		memcpy(num, v, digits);
		num[digits] = 0;
		uint64_t n;
		for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
			if (strcmp(v + digits, units[i].suffix) != 0)
				continue;
			if (parse_uint(num, UINT64_MAX >> units[i].shift, &n)) {
				gc_opt.memlimit = (size_t)(n << units[i].shift);
				return;
			}
		}
	}
	cgc_report("cgc: CGC_MEMLIMIT=\"%s\" is not a size (bytes, or a number with KiB, MiB, GiB or TiB); "
		   "no limit", v);
}

static void procs_parse(const char *v, int dflt)
{
	uint64_t n;
	if (parse_uint(v, GC_MAX_PROCS, &n) && n >= 1)
		gc_opt.procs = (int)n;
	else
		cgc_report("cgc: CGC_PROCS=\"%s\" is not a number from 1 to %d; using %d", v, GC_MAX_PROCS, dflt);
}

/* The stop signal. The default is a real-time signal: those queue rather than merge, and no shell,
 * container manager or common runtime claims SIGRTMIN+4 (SIGPWR, SIGXCPU and SIGURG all have
 * other owners). Synchronous and job-control signals are refused. */
static void signal_parse(const char *v)
{
	static const struct { const char *name; int signo; } names[] = {
		{"SIGUSR1", SIGUSR1}, {"SIGUSR2", SIGUSR2}, {"SIGURG", SIGURG},
		{"SIGPWR", SIGPWR},   {"SIGXCPU", SIGXCPU}, {"SIGWINCH", SIGWINCH},
	};
	int signo = 0;
	uint64_t n;
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		if (strcmp(v, names[i].name) == 0 || strcmp(v, names[i].name + 3) == 0)
			signo = names[i].signo;
	if (strncmp(v, "SIGRTMIN+", 9) == 0 && parse_uint(v + 9, 64, &n))
		signo = SIGRTMIN + (int)n <= SIGRTMAX ? SIGRTMIN + (int)n : 0;
	else if (parse_uint(v, 64, &n))
		signo = (int)n;
	bool usable = signo == SIGUSR1 || signo == SIGUSR2 || signo == SIGURG || signo == SIGPWR ||
		      signo == SIGXCPU || signo == SIGWINCH || (signo >= SIGRTMIN && signo <= SIGRTMAX);
	if (!usable) {
		cgc_report("cgc: CGC_SIGNAL=\"%s\" is not a usable signal; using %s", v, gc_opt.signame);
		return;
	}
	gc_opt.signo = signo;
	const char *name = NULL;
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		if (names[i].signo == signo)
			name = names[i].name;
	if (name) {
		strcpy(gc_opt.signame, name);
	} else {
		int k = signo - SIGRTMIN; /* 0..64 */
		strcpy(gc_opt.signame, "SIGRTMIN+");
		char *e = gc_opt.signame + strlen(gc_opt.signame);
		if (k >= 10)
			*e++ = (char)('0' + k / 10);
		*e++ = (char)('0' + k % 10);
		*e = 0;
	}
}

/* CGC_DEBUG=key=value,key=value. */
static void debug_parse(const char *v)
{
	char buf[256];
	size_t len = strlen(v);
	if (len >= sizeof buf)
		len = sizeof buf - 1;
	memcpy(buf, v, len);
	buf[len] = 0;
	char *save = NULL;
	for (char *kv = strtok_r(buf, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(kv, '=');
		const char *val = eq ? eq + 1 : "";
		if (eq)
			*eq = 0;
		int *flag = strcmp(kv, "gctrace") == 0     ? &gc_opt.gctrace
			    : strcmp(kv, "stw") == 0       ? &gc_opt.stw
			    : strcmp(kv, "checkmark") == 0 ? &gc_opt.checkmark
			    : strcmp(kv, "hugepages") == 0 ? &gc_opt.hugepages
							   : NULL;
		if (flag) {
			if (strcmp(val, "0") == 0 || strcmp(val, "1") == 0)
				*flag = val[0] - '0';
			else
				cgc_report("cgc: CGC_DEBUG: %s=\"%s\" is not 0 or 1; ignored", kv, val);
		} else {
			cgc_report("cgc: CGC_DEBUG: unknown key \"%s\"; ignored", kv);
		}
	}
}

void options_init(void)
{
	int ncpu = os_ncpu();
	int dflt_procs = ncpu < 1 ? 1 : ncpu > GC_MAX_PROCS ? GC_MAX_PROCS : ncpu;
	gc_opt.percent = GC_DEFAULT_PERCENT;
	gc_opt.memlimit = SIZE_MAX;
	gc_opt.procs = dflt_procs;
	gc_opt.signo = SIGRTMIN + DEFAULT_SIGNAL_OFFSET;
	strcpy(gc_opt.signame, "SIGRTMIN+4");
	gc_opt.gctrace = 0;
	gc_opt.stw = -1;
	gc_opt.checkmark = 0;
	gc_opt.hugepages = 0;
	const char *v;
	if ((v = getenv("CGC_PERCENT")) != NULL && *v)
		percent_parse(v);
	if ((v = getenv("CGC_MEMLIMIT")) != NULL && *v)
		memlimit_parse(v);
	if ((v = getenv("CGC_PROCS")) != NULL && *v)
		procs_parse(v, dflt_procs);
	if ((v = getenv("CGC_SIGNAL")) != NULL && *v)
		signal_parse(v);
	if ((v = getenv("CGC_DEBUG")) != NULL && *v)
		debug_parse(v);
}
