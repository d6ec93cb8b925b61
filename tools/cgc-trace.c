/* cgc-trace.c - draws a gctrace log (CGC_DEBUG=gctrace=1) as an SVG picture of heap and pauses.
 * The line format is the collector's (doc/design/collector.md); what is drawn: man/cgc-trace.1. */

/* Usage: cgc-trace [-o out.svg] [-t title] [log ...]
 *
 * Three steps: read every input line and keep the ones that parse as gctrace lines (read_input,
 * scan_line); sum them up (summarize); write one SVG 1.1 document (write_svg). Everything read is
 * kept as integers in the log's own units (microseconds, thousandths of a MB), so the summary
 * numbers are exact sums of what was printed, not float approximations of them; floating point is
 * used only to place things on the picture. */

#define _POSIX_C_SOURCE 200809L /* getline, getopt */

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- the log -------------------------------------------------------------------------------- */

typedef struct {
	uint64_t num;         /* cycle number as printed (1, 2, ...) */
	int64_t t_log_us;     /* cycle start as printed: microseconds since cgc started */
	int64_t t_us;         /* where it is drawn: t_log_us plus the offset of its run (run_t) */
	int64_t clock_us[3];  /* clock time of A (stop the world), B (mark), C (termination, restart) */
	int64_t pause_us;     /* A+B+C when the mark ran stopped ("(stw)"), A+C otherwise */
	int64_t heap_mmb[3];  /* thousandths of a MB: heap at cycle start, at mark end, marked live */
	int64_t goal_mmb;     /* this cycle's goal, thousandths of a MB */
	bool forced;          /* "(forced)": started by cgc_collect() */
	bool stw;             /* "(stw)" */
} cycle_t;

/* A log can hold several runs one after another (a test suite writing every program's stderr into
 * one file): a cycle number that does not grow, or a time that goes back, starts a new run. Runs
 * are drawn end to end, each starting where the one before ended. */
typedef struct {
	size_t first;         /* index of its first cycle */
	int64_t offset_us;    /* where it starts on the drawn time axis */
	int64_t end_us;       /* latest cycle end (start + A+B+C) in the run's own time */
} run_t;

typedef struct {
	cycle_t *c;
	size_t n, cap;
	run_t *run;
	size_t nruns, runs_cap;
	uint64_t prev_num;    /* number and raw time of the last cycle, to see a new run start */
	int64_t prev_t_us;
	size_t skipped;       /* near-miss lines: "gc N @" but not the rest of the format */
	const char *skip_name;/* where the first of them was */
	unsigned long skip_line;
} trace_t;

/* Totals for the title line, all exact. */
typedef struct {
	size_t forced;
	int64_t run_us;       /* where the last run ends on the drawn axis: all the runs' lengths */
	int64_t pause_total_us, pause_max_us;
	int64_t heap_max_mmb; /* largest of every heap number and goal: the top of the upper panel */
} summary_t;

static const char *prog = "cgc-trace";

static void die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static void *grow(void *p, size_t *cap, size_t elem)
{
	size_t ncap = *cap ? *cap * 2 : 256;

	if (ncap > SIZE_MAX / elem / 2)
		die("out of memory");
	p = realloc(p, ncap * elem);
	if (p == NULL)
		die("out of memory");
	*cap = ncap;
	return p;
}

/* ---- parsing one line ------------------------------------------------------------------------ */

/* The parser is a cursor over the line: each helper consumes its piece and says whether it was
 * there. sscanf is not used: it skips white space anywhere and accepts signs, "nan" and hex, all of
 * which would let malformed lines through. */

static bool is_digit(char ch)
{
	return ch >= '0' && ch <= '9';
}

static bool lit(const char **pp, const char *s)
{
	size_t n = strlen(s);

	if (strncmp(*pp, s, n) != 0)
		return false;
	*pp += n;
	return true;
}

/* A whole number of at most 18 digits (so it fits in 63 bits). */
static bool whole(const char **pp, uint64_t *out)
{
	const char *p = *pp;
	uint64_t v = 0;
	int nd = 0;

	while (is_digit(*p)) {
		if (++nd > 18)
			return false;
		v = v * 10 + (uint64_t)(*p++ - '0');
	}
	if (nd == 0)
		return false;
	*pp = p;
	*out = v;
	return true;
}

/* digits[.digits] as a count of 10^-scale units; decimals beyond scale are rounded half up. At most
 * 12 integer digits, so with scale <= 6 the result fits in 63 bits. */
static bool fixed(const char **pp, int scale, int64_t *out)
{
	const char *p = *pp;
	int64_t v = 0;
	int nd = 0, d = 0;

	while (is_digit(*p)) {
		if (++nd > 12)
			return false;
		v = v * 10 + (*p++ - '0');
	}
	if (nd == 0)
		return false;
	if (*p == '.') {
		p++;
		if (!is_digit(*p))
			return false;
		for (; is_digit(*p); p++) {
			if (d < scale)
				v = v * 10 + (*p - '0');
			else if (d == scale && *p >= '5')
				v++;
			d++;
		}
	}
	for (; d < scale; d++)
		v *= 10;
	*pp = p;
	*out = v;
	return true;
}

/* "a<sep>b<sep>c", each fixed with the given scale. */
static bool triple(const char **pp, const char *sep, int scale, int64_t v[3])
{
	return fixed(pp, scale, &v[0]) && lit(pp, sep) && fixed(pp, scale, &v[1]) && lit(pp, sep) &&
	       fixed(pp, scale, &v[2]);
}

/* "12.0 MB goal, ", or "off goal, " when collection was off (a forced cycle): the picture then
 * draws the goal at the heap's size, since there was none to grow towards. */
static bool goal(const char **pp, cycle_t *c)
{
	if (lit(pp, "off goal, ")) {
		c->goal_mmb = c->heap_mmb[0];
		return true;
	}
	return fixed(pp, 3, &c->goal_mmb) && lit(pp, " MB goal, ");
}

/* One gctrace line from its "gc" to its end:
 *   gc 3 @1.204s 2%: 0.021+3.412+0.050 ms clock, 0.021+6.700+0.050 ms cpu,
 *   12.1->12.1->5.3 MB, 12.0 MB goal, 0.1 MB stacks, 0.2 MB globals, 2 P (forced) (stw)
 * (one line). The flags may come in either order, each at most once; trailing blanks and a
 * carriage return are allowed, nothing else. Fields the picture does not use are still checked. */
static bool parse_gctrace(const char *p, cycle_t *c)
{
	uint64_t pct, procs;
	int64_t cpu_us[3], stacks, globals;

	memset(c, 0, sizeof(*c));
	if (!(lit(&p, "gc ") && whole(&p, &c->num) && lit(&p, " @") && fixed(&p, 6, &c->t_us) &&
	      lit(&p, "s ") && whole(&p, &pct) && lit(&p, "%: ") &&
	      triple(&p, "+", 3, c->clock_us) && lit(&p, " ms clock, ") &&
	      triple(&p, "+", 3, cpu_us) && lit(&p, " ms cpu, ") &&
	      triple(&p, "->", 3, c->heap_mmb) && lit(&p, " MB, ") &&
	      goal(&p, c) &&
	      fixed(&p, 3, &stacks) && lit(&p, " MB stacks, ") &&
	      fixed(&p, 3, &globals) && lit(&p, " MB globals, ") &&
	      whole(&p, &procs) && lit(&p, " P")))
		return false;
	bool mode = false;
	int64_t rescanned;
	for (;;) {
		if (!c->forced && lit(&p, " (forced)"))
			c->forced = true;
		else if (!c->stw && !mode && lit(&p, " (stw)"))
			c->stw = mode = true;
		else if (!mode && lit(&p, " (barrier)"))
			mode = true; /* concurrent, through the write barrier */
		else if (!mode && lit(&p, " (dirty, ") && fixed(&p, 3, &rescanned) && lit(&p, " MB rescanned)"))
			mode = true; /* concurrent, through write tracking */
		else
			break;
	}
	while (*p == ' ' || *p == '\t' || *p == '\r')
		p++;
	if (*p != '\0' || procs == 0)
		return false;
	c->pause_us = c->clock_us[0] + c->clock_us[2] + (c->stw ? c->clock_us[1] : 0);
	return true;
}

static bool is_alnum(char ch)
{
	return is_digit(ch) || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
}

/* 1: a gctrace line (in *c); 0: not one; -1: a near miss, some word "gc N @" that starts a
 * gctrace line in no other respect. Whatever precedes the "gc" (a time stamp, a process name) is
 * ignored; the "gc" must be a word of its own, so "libgc 2 @" is not a candidate. */
static int scan_line(const char *line, cycle_t *c)
{
	bool candidate = false;

	for (const char *s = strstr(line, "gc "); s != NULL; s = strstr(s + 1, "gc ")) {
		const char *p = s + 3;
		uint64_t num;

		if (s > line && is_alnum(s[-1]))
			continue;
		if (!whole(&p, &num) || !lit(&p, " @"))
			continue;
		candidate = true;
		if (parse_gctrace(s, c))
			return 1;
	}
	return candidate ? -1 : 0;
}

/* ---- reading -------------------------------------------------------------------------------- */

static void add_cycle(trace_t *tr, const cycle_t *c0)
{
	cycle_t c = *c0;
	run_t *r;
	int64_t end;

	if (tr->nruns == 0 || c.num <= tr->prev_num || c.t_us < tr->prev_t_us) {
		int64_t offset = 0;

		if (tr->nruns > 0 && __builtin_add_overflow(tr->run[tr->nruns - 1].offset_us,
							    tr->run[tr->nruns - 1].end_us, &offset))
			die("the runs in the log add up to more time than fits in 64 bits of microseconds");
		if (tr->nruns == tr->runs_cap)
			tr->run = grow(tr->run, &tr->runs_cap, sizeof(*tr->run));
		tr->run[tr->nruns++] = (run_t){ .first = tr->n, .offset_us = offset, .end_us = 0 };
	}
	r = &tr->run[tr->nruns - 1];
	tr->prev_num = c.num;
	tr->prev_t_us = c.t_us;
	end = c.t_us + c.clock_us[0] + c.clock_us[1] + c.clock_us[2];
	if (end > r->end_us)
		r->end_us = end;
	c.t_log_us = c.t_us;
	c.t_us += r->offset_us;
	if (tr->n == tr->cap)
		tr->c = grow(tr->c, &tr->cap, sizeof(*tr->c));
	tr->c[tr->n++] = c;
}

/* Reads one input; returns how many gctrace lines it held. */
static size_t read_input(trace_t *tr, FILE *f, const char *name)
{
	char *line = NULL;
	size_t cap = 0, found = 0;
	unsigned long lineno = 0;
	ssize_t len;
	cycle_t c;

	while ((len = getline(&line, &cap, f)) != -1) {
		lineno++;
		if (len > 0 && line[len - 1] == '\n')
			line[len - 1] = '\0';
		switch (scan_line(line, &c)) {
		case 1:
			add_cycle(tr, &c);
			found++;
			break;
		case -1:
			if (tr->skipped++ == 0) {
				tr->skip_name = name;
				tr->skip_line = lineno;
			}
			break;
		}
	}
	if (ferror(f))
		die("%s: %s", name, strerror(errno));
	free(line);
	return found;
}

static void summarize(const trace_t *tr, summary_t *s)
{
	memset(s, 0, sizeof(*s));
	for (size_t i = 0; i < tr->n; i++) {
		const cycle_t *c = &tr->c[i];

		s->forced += c->forced;
		/* Each number fits with room to spare (at most 12 integer digits, parse_gctrace); their
		 * sums need not, for absurd input. */
		if (__builtin_add_overflow(s->pause_total_us, c->pause_us, &s->pause_total_us))
			die("the pauses in the log add up to more than fits in 64 bits of microseconds");
		if (c->pause_us > s->pause_max_us)
			s->pause_max_us = c->pause_us;
		for (int k = 0; k < 3; k++)
			if (c->heap_mmb[k] > s->heap_max_mmb)
				s->heap_max_mmb = c->heap_mmb[k];
		if (c->goal_mmb > s->heap_max_mmb)
			s->heap_max_mmb = c->goal_mmb;
	}
	/* The runs are laid end to end, so the last one ends where they all do. */
	if (__builtin_add_overflow(tr->run[tr->nruns - 1].offset_us, tr->run[tr->nruns - 1].end_us,
				   &s->run_us))
		die("the runs in the log add up to more time than fits in 64 bits of microseconds");
}

/* ---- text ------------------------------------------------------------------------------------ */

/* v, in units of 10^-scale, with `decimals` decimals (decimals <= scale), rounded half up. */
static const char *fmt_fixed(char *buf, size_t size, int64_t v, int scale, int decimals)
{
	int64_t unit = 1, drop = 1;

	for (int i = 0; i < scale; i++)
		unit *= 10;
	for (int i = decimals; i < scale; i++)
		drop *= 10;
	if (v > INT64_MAX - drop / 2) /* absurd input; the sums are checked, this rounding is not */
		v = INT64_MAX - drop / 2;
	v = (v + drop / 2) / drop;
	unit /= drop;
	if (decimals == 0)
		snprintf(buf, size, "%lld", (long long)v);
	else
		snprintf(buf, size, "%lld.%0*lld", (long long)(v / unit), decimals, (long long)(v % unit));
	return buf;
}

/* Writes s as XML character data: markup characters escaped, and, since the document says it is
 * UTF-8, every byte that is not part of a valid UTF-8 sequence of an XML character replaced by '?'
 * (a file name or title can hold anything; the SVG must stay well-formed). */
static void put_text(FILE *out, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	while (*p) {
		unsigned char b = *p;
		int len = 0;

		switch (b) {
		case '&': fputs("&amp;", out); p++; continue;
		case '<': fputs("&lt;", out); p++; continue;
		case '>': fputs("&gt;", out); p++; continue;
		case '"': fputs("&quot;", out); p++; continue;
		case '\'': fputs("&apos;", out); p++; continue;
		}
		if (b < 0x80)
			len = (b >= 0x20 || b == '\t') ? 1 : 0;
		else if (b >= 0xc2 && b <= 0xdf)
			len = 2;
		else if (b >= 0xe0 && b <= 0xef)
			len = 3;
		else if (b >= 0xf0 && b <= 0xf4)
			len = 4;
		for (int i = 1; i < len; i++)
			if ((p[i] & 0xc0) != 0x80)
				len = 0;
		/* Overlong forms, surrogates, code points past U+10FFFF, and U+FFFE/U+FFFF. */
		if ((len == 3 && b == 0xe0 && p[1] < 0xa0) || (len == 3 && b == 0xed && p[1] > 0x9f) ||
		    (len == 4 && b == 0xf0 && p[1] < 0x90) || (len == 4 && b == 0xf4 && p[1] > 0x8f) ||
		    (len == 3 && b == 0xef && p[1] == 0xbf && (p[2] == 0xbe || p[2] == 0xbf)))
			len = 0;
		if (len == 0) {
			fputc('?', out);
			p++;
		} else {
			fwrite(p, 1, (size_t)len, out);
			p += len;
		}
	}
}

/* ---- the picture ----------------------------------------------------------------------------- */

/* Layout, in SVG user units (pixels): a title and summary line, a legend row, the heap panel, the
 * pause panel, then the time axis shared by both panels. */
enum {
	WIDTH = 1000, HEIGHT = 606,
	PX0 = 72, PX1 = 976,            /* plot area, left and right, both panels */
	UP_TOP = 84, UP_BOT = 374,      /* heap panel */
	LO_TOP = 404, LO_BOT = 554,     /* pause panel */
	MARKERS_MIN_GAP = 8,            /* draw point markers when cycles are at least this far apart */
	TOOLTIPS_MAX = 1000,            /* more pauses than this get no <title> tooltips */
	RUN_LABELS_MAX = 20,            /* more runs than this get separators but no "run k" labels */
};

#define COLOR_START "#cc0000"
#define COLOR_END "#ad7fa8"
#define COLOR_LIVE "#4e9a06"
#define COLOR_GOAL "#555753"
#define COLOR_PAUSE "#3465a4"
#define COLOR_FORCED "#f57900"
#define COLOR_GRID "#e4e4e4"
#define COLOR_AXIS "#2e3436"

/* An axis from 0 to max with ticks every step, both round numbers: the step is the smallest of
 * 1, 2, 2.5 or 5 times a power of 10 that needs at most max_ticks intervals, so the data fill most
 * of the panel. */
typedef struct {
	double max, step;
	int decimals;         /* for tick labels: enough to show step exactly */
} axis_t;

static axis_t make_axis(double data_max, int max_ticks, double min_span)
{
	static const double mant[4] = { 1, 2, 2.5, 5 };
	axis_t a;
	double mag;

	if (!(data_max > min_span))
		data_max = min_span;
	/* Start one power of 10 below the step that max_ticks would give, and go up. */
	mag = pow(10, floor(log10(data_max / max_ticks)) - 1);
	for (int i = 0;; i++) {
		a.step = mant[i % 4] * mag * pow(10, i / 4);
		a.max = ceil(data_max / a.step - 1e-9) * a.step;
		if (a.max / a.step <= max_ticks + 1e-9)
			break;
	}
	a.decimals = 0;
	while (a.decimals < 9 &&
	       fabs(a.step * pow(10, a.decimals) - round(a.step * pow(10, a.decimals))) > 1e-6)
		a.decimals++;
	return a;
}

typedef struct {
	FILE *out;
	const trace_t *tr;
	axis_t ax, ah, ap;    /* time (s), heap (MB), pause (ms) */
} pic_t;

static double x_of(const pic_t *pc, int64_t t_us)
{
	return PX0 + (double)t_us / 1e6 / pc->ax.max * (PX1 - PX0);
}

static double yh_of(const pic_t *pc, int64_t mmb)
{
	return UP_BOT - (double)mmb / 1e3 / pc->ah.max * (UP_BOT - UP_TOP);
}

static double yp_of(const pic_t *pc, int64_t us)
{
	return LO_BOT - (double)us / 1e3 / pc->ap.max * (LO_BOT - LO_TOP);
}

/* A polyline of up to millions of points, thinned to what the picture can show: of the points
 * that fall in one unit-wide column it keeps the first, the lowest, the highest and the last, in
 * their order. At the picture's size the thinned line looks the same as the full one (it has the
 * same extremes and the same joins between columns); 10,000 cycles cost at most 3,600 points. */
typedef struct {
	double x, y;
	size_t seq;           /* order of arrival within the column */
} pt_t;

typedef struct {
	FILE *out;
	long col;             /* pixel column being collected, -1 before the first point */
	size_t seq;
	pt_t first, lo, hi, last;
	int on_line;          /* points written on the current output line */
} poly_t;

static void poly_begin(poly_t *pl, FILE *out, const char *attrs)
{
	*pl = (poly_t){ .out = out, .col = -1 };
	fprintf(out, "<polyline fill=\"none\" %s points=\"", attrs);
}

static void poly_put(poly_t *pl, const pt_t *p)
{
	if (pl->on_line == 8) {
		fputc('\n', pl->out);
		pl->on_line = 0;
	} else if (pl->on_line > 0) {
		fputc(' ', pl->out);
	}
	fprintf(pl->out, "%.1f,%.1f", p->x, p->y);
	pl->on_line++;
}

static void poly_flush(poly_t *pl)
{
	pt_t keep[4] = { pl->first, pl->lo, pl->hi, pl->last };
	size_t last_seq = SIZE_MAX;

	if (pl->col < 0)
		return;
	/* Four entries: sort by arrival with insertion sort, write each arrival once. */
	for (int i = 1; i < 4; i++)
		for (int j = i; j > 0 && keep[j].seq < keep[j - 1].seq; j--) {
			pt_t t = keep[j];
			keep[j] = keep[j - 1];
			keep[j - 1] = t;
		}
	for (int i = 0; i < 4; i++)
		if (keep[i].seq != last_seq) {
			poly_put(pl, &keep[i]);
			last_seq = keep[i].seq;
		}
}

static void poly_point(poly_t *pl, double x, double y)
{
	pt_t p = { x, y, 0 };
	long col = (long)floor(x);

	if (col != pl->col) {
		poly_flush(pl);
		pl->col = col;
		pl->seq = 0;
		p.seq = pl->seq++;
		pl->first = pl->lo = pl->hi = pl->last = p;
		return;
	}
	p.seq = pl->seq++;
	/* y grows downwards: the lowest value is the largest y. */
	if (p.y > pl->lo.y)
		pl->lo = p;
	if (p.y < pl->hi.y)
		pl->hi = p;
	pl->last = p;
}

static void poly_end(poly_t *pl)
{
	poly_flush(pl);
	fputs("\"/>\n", pl->out);
}

static int intervals(const axis_t *a)
{
	return (int)lround(a->max / a->step);
}

static void write_axes(const pic_t *pc)
{
	FILE *out = pc->out;
	char buf[64];

	/* Grid lines at every tick but 0, where the axis line is. */
	fprintf(out, "<g stroke=\"%s\" stroke-width=\"1\">\n", COLOR_GRID);
	for (int i = 1; i <= intervals(&pc->ax); i++) {
		double x = PX0 + (double)i / intervals(&pc->ax) * (PX1 - PX0);
		fprintf(out, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\"/>\n", x, UP_TOP, x, UP_BOT);
		fprintf(out, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\"/>\n", x, LO_TOP, x, LO_BOT);
	}
	for (int i = 1; i <= intervals(&pc->ah); i++) {
		double y = UP_BOT - (double)i / intervals(&pc->ah) * (UP_BOT - UP_TOP);
		fprintf(out, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\"/>\n", PX0, y, PX1, y);
	}
	for (int i = 1; i <= intervals(&pc->ap); i++) {
		double y = LO_BOT - (double)i / intervals(&pc->ap) * (LO_BOT - LO_TOP);
		fprintf(out, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\"/>\n", PX0, y, PX1, y);
	}
	fputs("</g>\n", out);

	/* The axis lines: left and bottom of each panel. */
	fprintf(out, "<g stroke=\"%s\" stroke-width=\"1\" fill=\"none\">\n", COLOR_AXIS);
	fprintf(out, "<polyline points=\"%d,%d %d,%d %d,%d\"/>\n", PX0, UP_TOP, PX0, UP_BOT, PX1, UP_BOT);
	fprintf(out, "<polyline points=\"%d,%d %d,%d %d,%d\"/>\n", PX0, LO_TOP, PX0, LO_BOT, PX1, LO_BOT);
	fputs("</g>\n", out);

	/* Tick labels: time under the pause panel only, since the panels share it. */
	fprintf(out, "<g fill=\"%s\" font-size=\"11\">\n<g text-anchor=\"middle\">\n", COLOR_AXIS);
	for (int i = 0; i <= intervals(&pc->ax); i++) {
		snprintf(buf, sizeof(buf), "%.*f", pc->ax.decimals, i * pc->ax.step);
		fprintf(out, "<text x=\"%.1f\" y=\"%d\">%s</text>\n",
			PX0 + (double)i / intervals(&pc->ax) * (PX1 - PX0), LO_BOT + 15, buf);
	}
	fputs("</g>\n<g text-anchor=\"end\">\n", out);
	for (int i = 0; i <= intervals(&pc->ah); i++) {
		snprintf(buf, sizeof(buf), "%.*f", pc->ah.decimals, i * pc->ah.step);
		fprintf(out, "<text x=\"%d\" y=\"%.1f\">%s</text>\n", PX0 - 6,
			UP_BOT - (double)i / intervals(&pc->ah) * (UP_BOT - UP_TOP) + 4, buf);
	}
	for (int i = 0; i <= intervals(&pc->ap); i++) {
		snprintf(buf, sizeof(buf), "%.*f", pc->ap.decimals, i * pc->ap.step);
		fprintf(out, "<text x=\"%d\" y=\"%.1f\">%s</text>\n", PX0 - 6,
			LO_BOT - (double)i / intervals(&pc->ap) * (LO_BOT - LO_TOP) + 4, buf);
	}
	fputs("</g>\n</g>\n", out);

	fprintf(out, "<g fill=\"%s\" font-size=\"12\" text-anchor=\"middle\">\n", COLOR_AXIS);
	fprintf(out, "<text x=\"%d\" y=\"%d\">seconds since cgc started</text>\n", (PX0 + PX1) / 2,
		LO_BOT + 34);
	fprintf(out, "<text transform=\"translate(18,%d) rotate(-90)\">heap (MB)</text>\n",
		(UP_TOP + UP_BOT) / 2);
	fprintf(out, "<text transform=\"translate(18,%d) rotate(-90)\">pause (ms)</text>\n",
		(LO_TOP + LO_BOT) / 2);
	fputs("</g>\n", out);
}

/* Legend entries: a swatch and a label, laid out left to right. Label widths are estimated at 6.6
 * units a character, about right for 12-unit sans-serif. */
enum swatch { SW_LINE, SW_WIDE, SW_DASHED, SW_BAR };

static double legend_item(FILE *out, double x, enum swatch kind, const char *color,
			  const char *label)
{
	int y = 68;

	switch (kind) {
	case SW_LINE:
	case SW_WIDE:
	case SW_DASHED:
		fprintf(out, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"%s\" "
			"stroke-width=\"%s\"%s/>\n", x, y - 4, x + 22, y - 4, color, kind == SW_WIDE ? "3" : "1.5",
			kind == SW_DASHED ? " stroke-dasharray=\"5,3\"" : "");
		break;
	case SW_BAR:
		fprintf(out, "<rect x=\"%.1f\" y=\"%d\" width=\"8\" height=\"11\" fill=\"%s\"/>\n",
			x + 7, y - 10, color);
		break;
	}
	fprintf(out, "<text x=\"%.1f\" y=\"%d\">%s</text>\n", x + 28, y, label);
	return x + 28 + 6.6 * (double)strlen(label) + 18;
}

static void write_legend(const pic_t *pc, const summary_t *s)
{
	FILE *out = pc->out;
	double x = PX0;

	fprintf(out, "<g font-size=\"12\" fill=\"%s\">\n", COLOR_AXIS);
	x = legend_item(out, x, SW_LINE, COLOR_START, "heap at cycle start");
	x = legend_item(out, x, SW_WIDE, COLOR_END, "heap at mark end");
	x = legend_item(out, x, SW_LINE, COLOR_LIVE, "marked live");
	x = legend_item(out, x, SW_DASHED, COLOR_GOAL, "goal");
	x = legend_item(out, x, SW_BAR, COLOR_PAUSE, "pause");
	if (s->forced > 0)
		legend_item(out, x, SW_BAR, COLOR_FORCED, "forced (cgc_collect)");
	fputs("</g>\n", out);
}

/* Dashed separators where a new run starts; labelled when there are few. */
static void write_runs(const pic_t *pc)
{
	FILE *out = pc->out;
	const trace_t *tr = pc->tr;

	if (tr->nruns < 2)
		return;
	fprintf(out, "<g stroke=\"%s\" stroke-dasharray=\"2,3\">\n", COLOR_AXIS);
	for (size_t r = 1; r < tr->nruns; r++) {
		double x = x_of(pc, tr->run[r].offset_us);
		fprintf(out, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\"/>\n", x, UP_TOP, x, LO_BOT);
	}
	fputs("</g>\n", out);
	if (tr->nruns > RUN_LABELS_MAX)
		return;
	fprintf(out, "<g font-size=\"10\" fill=\"%s\">\n", COLOR_AXIS);
	for (size_t r = 1; r < tr->nruns; r++)
		fprintf(out, "<text x=\"%.1f\" y=\"%d\">run %zu</text>\n", x_of(pc, tr->run[r].offset_us) + 3,
			UP_TOP + 10, r + 1);
	fputs("</g>\n", out);
}

static void write_heap(const pic_t *pc)
{
	FILE *out = pc->out;
	const trace_t *tr = pc->tr;
	static const char *const attrs[3] = {
		"stroke=\"" COLOR_START "\" stroke-width=\"1.5\"",
		"stroke=\"" COLOR_END "\" stroke-width=\"3\"",
		"stroke=\"" COLOR_LIVE "\" stroke-width=\"1.5\"",
	};
	/* Back to front: goal, live, mark end (wide), start (narrow, on top: with a stopped mark the
	 * heap does not grow during it, so start and mark end coincide and both must stay visible). */
	static const int order[3] = { 2, 1, 0 };
	poly_t pl;

	for (size_t r = 0; r < tr->nruns; r++) {
		size_t first = tr->run[r].first;
		size_t end = r + 1 < tr->nruns ? tr->run[r + 1].first : tr->n;

		/* The goal of cycle i is what the heap grew towards since cycle i-1: a step at each cycle. */
		poly_begin(&pl, out, "class=\"goal\" stroke=\"" COLOR_GOAL "\" stroke-width=\"1.2\" "
			   "stroke-dasharray=\"5,3\"");
		poly_point(&pl, x_of(pc, tr->run[r].offset_us), yh_of(pc, tr->c[first].goal_mmb));
		for (size_t i = first; i < end; i++) {
			poly_point(&pl, x_of(pc, tr->c[i].t_us), yh_of(pc, tr->c[i].goal_mmb));
			if (i + 1 < end)
				poly_point(&pl, x_of(pc, tr->c[i].t_us), yh_of(pc, tr->c[i + 1].goal_mmb));
		}
		poly_end(&pl);
		for (int k = 0; k < 3; k++) {
			int h = order[k];
			poly_begin(&pl, out, attrs[h]);
			for (size_t i = first; i < end; i++)
				poly_point(&pl, x_of(pc, tr->c[i].t_us), yh_of(pc, tr->c[i].heap_mmb[h]));
			poly_end(&pl);
		}
	}

	/* Point markers, when the cycles are far enough apart to tell them from the line. */
	if ((double)(PX1 - PX0) / (double)tr->n < MARKERS_MIN_GAP)
		return;
	for (int k = 0; k < 3; k++) {
		static const char *const colors[3] = { COLOR_START, COLOR_END, COLOR_LIVE };
		int h = order[k];

		fprintf(out, "<g fill=\"%s\">\n", colors[h]);
		for (size_t i = 0; i < tr->n; i++) {
			const cycle_t *c = &tr->c[i];
			char a[32], b[32], l[32], g[32];

			fprintf(out, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%s\">", x_of(pc, c->t_us),
				yh_of(pc, c->heap_mmb[h]), h == 1 ? "3.5" : "2.5");
			fprintf(out, "<title>gc %llu: %s-&gt;%s-&gt;%s MB, goal %s MB</title></circle>\n",
				(unsigned long long)c->num, fmt_fixed(a, sizeof(a), c->heap_mmb[0], 3, 1),
				fmt_fixed(b, sizeof(b), c->heap_mmb[1], 3, 1),
				fmt_fixed(l, sizeof(l), c->heap_mmb[2], 3, 1),
				fmt_fixed(g, sizeof(g), c->goal_mmb, 3, 1));
		}
		fputs("</g>\n", out);
	}
	/* Forced cycles: a ring around the heap-at-start point. */
	fprintf(out, "<g class=\"forced-marks\" fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\">\n",
		COLOR_FORCED);
	for (size_t i = 0; i < tr->n; i++)
		if (tr->c[i].forced)
			fprintf(out, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"5.5\"/>\n", x_of(pc, tr->c[i].t_us),
				yh_of(pc, tr->c[i].heap_mmb[0]));
	fputs("</g>\n", out);
}

/* One bar per pause, starting at the cycle's time. Its width is a share of the room each cycle
 * has, between 1 and 10 units: with thousands of cycles the bars become hairlines (forced ones 2
 * units, drawn last, so that they still show). Every bar is class "pause" ("pause forced" for
 * forced cycles), so they can be counted. */
static void write_pauses(const pic_t *pc)
{
	FILE *out = pc->out;
	const trace_t *tr = pc->tr;
	double w = (PX1 - PX0) / (double)tr->n * 0.5;
	bool tips = tr->n <= TOOLTIPS_MAX;

	if (w > 10)
		w = 10;
	if (w < 1)
		w = 1;
	for (int forced = 0; forced <= 1; forced++) {
		fprintf(out, "<g fill=\"%s\" shape-rendering=\"crispEdges\">\n",
			forced ? COLOR_FORCED : COLOR_PAUSE);
		for (size_t i = 0; i < tr->n; i++) {
			const cycle_t *c = &tr->c[i];
			double x = x_of(pc, c->t_us), y = yp_of(pc, c->pause_us);
			double bw = forced && w < 2 ? 2 : w;
			char t[32], p[32];

			if (c->forced != forced)
				continue;
			if (x > PX1 - bw)
				x = PX1 - bw;
			/* A pause too short to show still gets a sliver: a cycle happened there. */
			if (y > LO_BOT - 1)
				y = LO_BOT - 1;
			fprintf(out, "<rect class=\"pause%s\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"",
				forced ? " forced" : "", x, y, bw, LO_BOT - y);
			if (tips)
				fprintf(out, "><title>gc %llu @%ss: pause %s ms%s</title></rect>\n",
					(unsigned long long)c->num, fmt_fixed(t, sizeof(t), c->t_log_us, 6, 3),
					fmt_fixed(p, sizeof(p), c->pause_us, 3, 3), forced ? " (forced)" : "");
			else
				fputs("/>\n", out);
		}
		fputs("</g>\n", out);
	}
}

/* The summary on the title line; also used as the document's <desc>. */
static void format_summary(char *buf, size_t size, const trace_t *tr, const summary_t *s)
{
	char runs[48] = "", forced[48] = "", rt[32], mx[32], mean[32], tot[32], pct[32], peak[32];
	int64_t n = (int64_t)tr->n;
	int64_t mean_us = s->pause_total_us / n + (s->pause_total_us % n * 2 >= n);
	/* Hundredths of a percent, rounded; an empty run (one cycle at 0 that took no time) is 0%. Long
	 * double holds both integers exactly (64-bit mantissa at least) where total * 10000 could
	 * overflow int64_t. */
	int64_t pct_h = s->run_us > 0 ? llroundl((long double)s->pause_total_us * 10000 / s->run_us) : 0;

	if (s->forced > 0)
		snprintf(forced, sizeof(forced), " (%zu forced)", s->forced);
	if (tr->nruns > 1)
		snprintf(runs, sizeof(runs), " in %zu runs", tr->nruns);
	snprintf(buf, size,
		"%zu cycle%s%s%s, run time %s s; pause max %s ms, mean %s ms, total %s ms (%s%% of run time); "
		"peak heap %s MB",
		tr->n, tr->n == 1 ? "" : "s", forced, runs, fmt_fixed(rt, sizeof(rt), s->run_us, 6, 3),
		fmt_fixed(mx, sizeof(mx), s->pause_max_us, 3, 3), fmt_fixed(mean, sizeof(mean), mean_us, 3, 3),
		fmt_fixed(tot, sizeof(tot), s->pause_total_us, 3, 3), fmt_fixed(pct, sizeof(pct), pct_h, 2, 2),
		fmt_fixed(peak, sizeof(peak), s->heap_max_mmb, 3, 1));
}

static void write_svg(FILE *out, const trace_t *tr, const char *title)
{
	summary_t s;
	pic_t pc = { .out = out, .tr = tr };
	char summary[512];

	summarize(tr, &s);
	format_summary(summary, sizeof(summary), tr, &s);
	/* Minimum spans: the log's resolution (1 ms of time, 0.1 MB, 0.001 ms) would make axes of
	 * nothing; an all-zero log gets a small axis instead of a division by zero. */
	pc.ax = make_axis((double)s.run_us / 1e6, 10, 0.001);
	pc.ah = make_axis((double)s.heap_max_mmb / 1e3, 8, 0.1);
	pc.ap = make_axis((double)s.pause_max_us / 1e3, 5, 0.001);

	fputs("<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"no\"?>\n", out);
	fprintf(out, "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" "
		"width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
		"font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n",
		WIDTH, HEIGHT, WIDTH, HEIGHT);
	fputs("<title>", out);
	put_text(out, title);
	fputs("</title>\n<desc>", out);
	put_text(out, summary);
	fputs(" (drawn by cgc-trace)</desc>\n", out);
	fprintf(out, "<rect width=\"%d\" height=\"%d\" fill=\"#ffffff\"/>\n", WIDTH, HEIGHT);

	fprintf(out, "<text x=\"%d\" y=\"26\" font-size=\"16\" font-weight=\"bold\" fill=\"%s\">",
		PX0, COLOR_AXIS);
	put_text(out, title);
	fprintf(out, "</text>\n<text class=\"summary\" x=\"%d\" y=\"46\" font-size=\"12\" "
		"fill=\"%s\">", PX0, COLOR_AXIS);
	put_text(out, summary);
	fputs("</text>\n", out);

	write_legend(&pc, &s);
	write_axes(&pc);
	write_runs(&pc);
	write_heap(&pc);
	write_pauses(&pc);
	fputs("</svg>\n", out);
}

/* ---- main ------------------------------------------------------------------------------------ */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: %s [-o out.svg] [-t title] [log ...]\n"
		"Draws the gctrace lines (CGC_DEBUG=gctrace=1) found in the logs, or in standard input,\n"
		"as an SVG picture of heap sizes and pauses over time.\n"
		"  -o out.svg  write the picture to out.svg instead of standard output\n"
		"  -t title    the picture's title (default: the log's name)\n"
		"  -h          print this help\n",
		prog);
}

int main(int argc, char **argv)
{
	const char *outpath = NULL, *title = NULL;
	char deftitle[256];
	trace_t tr = { 0 };
	FILE *out = stdout;
	int opt;

	for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
		if (strcmp(argv[i], "--help") == 0) {
			usage(stdout);
			return 0;
		}
	opterr = 0; /* getopt's messages would name argv[0]; ours name cgc-trace */
	while ((opt = getopt(argc, argv, ":ho:t:")) != -1) {
		switch (opt) {
		case 'h':
			usage(stdout);
			return 0;
		case 'o':
			outpath = optarg;
			break;
		case 't':
			title = optarg;
			break;
		case ':':
			fprintf(stderr, "%s: option -%c needs an argument\n", prog, optopt);
			usage(stderr);
			return 2;
		default:
			fprintf(stderr, "%s: unknown option -%c\n", prog, optopt);
			usage(stderr);
			return 2;
		}
	}

	/* Each input must hold a trace: one that does not is most likely the wrong file. The names of
	 * those that do not are reported after the count of skipped lines, which may explain why. */
	const char **missing = calloc((size_t)(argc - optind) + 1, sizeof(*missing));
	size_t nmissing = 0;

	if (missing == NULL)
		die("out of memory");
	if (optind == argc && read_input(&tr, stdin, "standard input") == 0)
		missing[nmissing++] = "standard input";
	for (int i = optind; i < argc; i++) {
		bool is_stdin = strcmp(argv[i], "-") == 0;
		const char *name = is_stdin ? "standard input" : argv[i];
		FILE *f = is_stdin ? stdin : fopen(argv[i], "r");

		if (f == NULL)
			die("%s: %s", argv[i], strerror(errno));
		if (read_input(&tr, f, name) == 0)
			missing[nmissing++] = name;
		if (!is_stdin)
			fclose(f);
	}
	if (tr.skipped > 0)
		fprintf(stderr, "%s: skipped %zu malformed gctrace line%s (the first is line %lu of %s)\n", prog,
			tr.skipped, tr.skipped == 1 ? "" : "s", tr.skip_line, tr.skip_name);
	for (size_t i = 0; i < nmissing; i++)
		fprintf(stderr, "%s: no gctrace lines in %s\n", prog, missing[i]);
	free(missing);
	if (nmissing > 0)
		return 1;

	if (title == NULL) {
		if (argc - optind == 1)
			snprintf(deftitle, sizeof(deftitle), "gctrace of %s", argv[optind]);
		else if (optind == argc)
			snprintf(deftitle, sizeof(deftitle), "gctrace of standard input");
		else
			snprintf(deftitle, sizeof(deftitle), "gctrace of %s and %d more", argv[optind],
				argc - optind - 1);
		title = deftitle;
	}
	if (outpath != NULL && (out = fopen(outpath, "w")) == NULL)
		die("%s: %s", outpath, strerror(errno));
	write_svg(out, &tr, title);
	if (ferror(out) | (fclose(out) != 0)) {
		int err = errno;

		if (outpath != NULL)
			remove(outpath);
		die("%s: %s", outpath ? outpath : "standard output", strerror(err));
	}
	free(tr.c);
	free(tr.run);
	return 0;
}
