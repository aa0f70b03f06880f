/* A small vsnprintf for guests: enough for diagnostics and test output. */
#include "kapsel_guest/libc.h"

struct out {
	char *buffer;
	size_t size;
	size_t length; /* would-be length, as snprintf returns */
};

static void put(struct out *o, char c)
{
	if (o->length + 1 < o->size)
		o->buffer[o->length] = c;
	o->length++;
}

static void put_padded(struct out *o, const char *s, size_t n, int width, int left, char pad)
{
	int fill = width > (int)n ? width - (int)n : 0;
	if (!left)
		while (fill-- > 0)
			put(o, pad);
	for (size_t i = 0; i < n; i++)
		put(o, s[i]);
	if (left)
		while (fill-- > 0)
			put(o, ' ');
}

int kg_vsnprintf(char *buffer, size_t size, const char *fmt, va_list ap)
{
	struct out o = { buffer, size, 0 };
	for (const char *p = fmt; *p; p++) {
		if (*p != '%') {
			put(&o, *p);
			continue;
		}
		p++;
		int left = 0, width = 0, longs = 0;
		char pad = ' ';
		for (;; p++) {
			if (*p == '-')
				left = 1;
			else if (*p == '0')
				pad = '0';
			else
				break;
		}
		while (*p >= '0' && *p <= '9') {
			/* Saturate: a silly width must not overflow an int. */
			if (width < 100000)
				width = width * 10 + (*p - '0');
			p++;
		}
		while (*p == 'l' || *p == 'z') {
			longs++;
			p++;
		}
		char digits[24];
		size_t n = 0;
		switch (*p) {
		case 'd':
		case 'i': {
			long long v = longs ? va_arg(ap, long long) : va_arg(ap, int);
			unsigned long long u =
				v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
			do
				digits[sizeof(digits) - 1 - n++] = (char)('0' + u % 10);
			while ((u /= 10) && n < sizeof(digits) - 1);
			if (v < 0 && pad == '0' && !left) {
				/* The sign goes before the zeros: "-0042". */
				put(&o, '-');
				width = width > 0 ? width - 1 : 0;
			} else if (v < 0) {
				digits[sizeof(digits) - 1 - n++] = '-';
			}
			put_padded(&o, digits + sizeof(digits) - n, n, width, left, pad);
			break;
		}
		case 'u':
		case 'x':
		case 'X':
		case 'p': {
			unsigned long long u;
			unsigned base = *p == 'u' ? 10 : 16;
			const char *set = *p == 'X' ? "0123456789ABCDEF" : "0123456789abcdef";
			if (*p == 'p')
				u = (uintptr_t)va_arg(ap, void *);
			else
				u = longs ? va_arg(ap, unsigned long long) : va_arg(ap, unsigned);
			do
				digits[sizeof(digits) - 1 - n++] = set[u % base];
			while ((u /= base) && n < sizeof(digits) - 1);
			if (*p == 'p') {
				put(&o, '0');
				put(&o, 'x');
			}
			put_padded(&o, digits + sizeof(digits) - n, n, width, left, pad);
			break;
		}
		case 's': {
			const char *s = va_arg(ap, const char *);
			if (!s)
				s = "(null)";
			put_padded(&o, s, strlen(s), width, left, ' ');
			break;
		}
		case 'c':
			digits[0] = (char)va_arg(ap, int);
			put_padded(&o, digits, 1, width, left, ' ');
			break;
		case '%':
			put(&o, '%');
			break;
		case '\0':
			p--;
			break;
		default:
			put(&o, '%');
			put(&o, *p);
			break;
		}
	}
	if (size)
		buffer[o.length < size ? o.length : size - 1] = '\0';
	return (int)o.length;
}

int kg_snprintf(char *buffer, size_t size, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = kg_vsnprintf(buffer, size, fmt, ap);
	va_end(ap);
	return n;
}
