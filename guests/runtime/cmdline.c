/* Key=value lookups in the boot command line ("count=1000 port=0x80 mode=in"). */
#include "runtime.h"

/* Longest command line looked at: a missing NUL must not make lookups run through all of memory. */
#define CMDLINE_SCAN_LIMIT 65536

static const char *cmdline = "";

void cmdline_set(const char *s) { cmdline = s != NULL ? s : ""; }

const char *cmdline_get(void) { return cmdline; }

/* Pointer to the value after `key`, or NULL. */
static const char *cmdline_find(const char *key)
{
    size_t keylen = strnlen(key, 256);
    size_t len = strnlen(cmdline, CMDLINE_SCAN_LIMIT);
    for (size_t i = 0; i + keylen <= len; i++) {
        bool at_word_start = i == 0 || cmdline[i - 1] == ' ';
        if (at_word_start && memcmp(cmdline + i, key, keylen) == 0)
            return cmdline + i + keylen;
    }
    return NULL;
}

static bool is_value_end(char c) { return c == '\0' || c == ' '; }

static int digit_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return 99;
}

uint64_t cmdline_get_u64(const char *key, uint64_t fallback)
{
    const char *v = cmdline_find(key);
    if (v == NULL || is_value_end(*v))
        return fallback;
    unsigned base = 10;
    if (v[0] == '0' && (v[1] == 'x' || v[1] == 'X')) {
        base = 16;
        v += 2;
        if (is_value_end(*v))
            return fallback;
    }
    uint64_t result = 0;
    for (; !is_value_end(*v); v++) {
        int d = digit_value(*v);
        if (d >= (int)base)
            return fallback;
        result = result * base + (unsigned)d;
    }
    return result;
}

bool cmdline_value_is(const char *key, const char *value)
{
    const char *v = cmdline_find(key);
    if (v == NULL)
        return false;
    size_t n = strnlen(value, 256);
    return memcmp(v, value, n) == 0 && is_value_end(v[n]);
}
