/* alloc/report.c - one-line reports on stderr without allocating, and the fatal exit.
 * Bad input (doc/design/allocator.md, "Bad input") ends here: one line, then abort(). */
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "alloc/check.h"
#include "alloc/os.h"

static size_t put_str(char *buf, size_t cap, size_t n, const char *s)
{
	while (*s) {
		if (n + 1 < cap)
			buf[n] = *s;
		n++;
		s++;
	}
	return n;
}

static size_t put_num(char *buf, size_t cap, size_t n, unsigned long long v, unsigned base, int neg)
{
	char tmp[32];
	int i = 0;
	do {
		tmp[i++] = "0123456789abcdef"[v % base];
		v /= base;
	} while (v);
	if (neg)
		tmp[i++] = '-';
	while (i > 0) {
		if (n + 1 < cap)
			buf[n] = tmp[i - 1];
		n++;
		i--;
	}
	return n;
}

size_t cgc_format(char *buf, size_t cap, const char *fmt, va_list ap)
{
	size_t n = 0;
	for (const char *f = fmt; *f; f++) {
		if (*f != '%') {
			if (n + 1 < cap)
				buf[n] = *f;
			n++;
			continue;
		}
		f++;
		int lng = 0, sz = 0;
		while (*f == 'l') {
			lng++;
			f++;
		}
		if (*f == 'z') {
			sz = 1;
			f++;
		}
		switch (*f) {
		case 's': {
			const char *s = va_arg(ap, const char *);
			n = put_str(buf, cap, n, s ? s : "(null)");
			break;
		}
		case 'p':
			n = put_str(buf, cap, n, "0x");
			n = put_num(buf, cap, n, (uintptr_t)va_arg(ap, void *), 16, 0);
			break;
		case 'd': {
			long long v = lng ? va_arg(ap, long) : va_arg(ap, int);
			n = put_num(buf, cap, n, v < 0 ? (unsigned long long)-v : (unsigned long long)v, 10, v < 0);
			break;
		}
		case 'u':
		case 'x': {
			unsigned long long v;
			if (sz)
				v = va_arg(ap, size_t);
			else if (lng >= 2)
				v = va_arg(ap, unsigned long long);
			else if (lng)
				v = va_arg(ap, unsigned long);
			else
				v = va_arg(ap, unsigned);
			n = put_num(buf, cap, n, v, *f == 'x' ? 16 : 10, 0);
			break;
		}
		case '%':
			if (n + 1 < cap)
				buf[n] = '%';
			n++;
			break;
		default: /* unknown conversion: print it as is, never read an argument */
			if (n + 1 < cap)
				buf[n] = '%';
			n++;
			if (*f == '\0')
				goto out;
			if (n + 1 < cap)
				buf[n] = *f;
			n++;
		}
	}
out:
	if (cap)
		buf[n < cap ? n : cap - 1] = '\0';
	return n;
}

void cgc_vreport(const char *fmt, va_list ap)
{
	char buf[512];
	size_t n = cgc_format(buf, sizeof buf - 1, fmt, ap);
	if (n > sizeof buf - 2)
		n = sizeof buf - 2;
	buf[n++] = '\n';
	os_write_stderr(buf, n);
}

void cgc_report(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	cgc_vreport(fmt, ap);
	va_end(ap);
}

void cgc_fatal(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	cgc_vreport(fmt, ap);
	va_end(ap);
	abort();
}
