/* A small printf to the serial port: %s %c %d %i %u %x %X %p %%, flags '0' and '-', a width, and the
 * length modifiers l, ll and z. */
#include "runtime.h"

struct spec {
    bool left;
    char pad;
    unsigned width;
};

static int emit_padded(const char *s, size_t len, const struct spec *sp)
{
    size_t fill = sp->width > len ? sp->width - len : 0;
    if (!sp->left) {
        /* Zero padding goes after a sign. */
        if (sp->pad == '0' && len > 0 && s[0] == '-') {
            serial_putc('-');
            s++;
            len--;
        }
        for (size_t i = 0; i < fill; i++)
            serial_putc(sp->pad);
    }
    serial_write(s, len);
    if (sp->left)
        for (size_t i = 0; i < fill; i++)
            serial_putc(' ');
    return (int)(len + fill);
}

static int emit_number(uint64_t value, bool negative, unsigned base, bool upper, const struct spec *sp)
{
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    char buf[24];
    size_t pos = sizeof(buf);
    do {
        buf[--pos] = digits[value % base];
        value /= base;
    } while (value != 0);
    if (negative)
        buf[--pos] = '-';
    return emit_padded(buf + pos, sizeof(buf) - pos, sp);
}

int vprintf(const char *fmt, va_list ap)
{
    int count = 0;
    for (const char *p = fmt; *p != '\0'; p++) {
        if (*p != '%') {
            serial_putc(*p);
            count++;
            continue;
        }
        p++;
        struct spec sp = {.left = false, .pad = ' ', .width = 0};
        for (;; p++) {
            if (*p == '-')
                sp.left = true;
            else if (*p == '0')
                sp.pad = '0';
            else
                break;
        }
        if (sp.left)
            sp.pad = ' ';
        while (*p >= '0' && *p <= '9')
            sp.width = sp.width * 10 + (unsigned)(*p++ - '0');
        unsigned longs = 0;
        for (;; p++) {
            if (*p == 'l')
                longs++;
            else if (*p == 'z')
                longs = 2;
            else
                break;
        }
        switch (*p) {
        case 'd':
        case 'i': {
            int64_t v = longs ? va_arg(ap, int64_t) : va_arg(ap, int);
            uint64_t magnitude = v < 0 ? -(uint64_t)v : (uint64_t)v;
            count += emit_number(magnitude, v < 0, 10, false, &sp);
            break;
        }
        case 'u':
        case 'x':
        case 'X': {
            uint64_t v = longs ? va_arg(ap, uint64_t) : va_arg(ap, unsigned);
            count += emit_number(v, false, *p == 'u' ? 10 : 16, *p == 'X', &sp);
            break;
        }
        case 'p':
            serial_write("0x", 2);
            count += 2 + emit_number((uintptr_t)va_arg(ap, void *), false, 16, false, &sp);
            break;
        case 'c': {
            char c = (char)va_arg(ap, int);
            count += emit_padded(&c, 1, &sp);
            break;
        }
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (s == NULL)
                s = "(null)";
            count += emit_padded(s, strnlen(s, 1 << 20), &sp);
            break;
        }
        case '%':
            serial_putc('%');
            count++;
            break;
        case '\0':
            return count;
        default: /* unknown conversion: print it as is */
            serial_putc('%');
            serial_putc(*p);
            count += 2;
            break;
        }
    }
    return count;
}

int printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vprintf(fmt, ap);
    va_end(ap);
    return n;
}
