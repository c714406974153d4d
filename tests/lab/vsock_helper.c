/*
 * vsock-helper: the guest side of the vsock lab test, a static program for the busybox initramfs (busybox
 * has no vsock support).
 *
 *   vsock-helper connect CID PORT MESSAGE   connect, send "MESSAGE\n", print the one-line reply
 *   vsock-helper serve PORT                 accept one connection, read a line, answer it upper-cased,
 *                                           print "served: LINE"
 * Both give up after 60 seconds (alarm) and exit with status 1 on any error, saying which.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

static int fail(const char *what)
{
    perror(what);
    return 1;
}

static ssize_t read_line(int fd, char *buf, size_t size)
{
    size_t n = 0;
    while (n + 1 < size) {
        ssize_t r = read(fd, buf + n, 1);
        if (r <= 0)
            break;
        if (buf[n++] == '\n')
            break;
    }
    buf[n] = '\0';
    return (ssize_t)n;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int main(int argc, char **argv)
{
    alarm(60);
    char line[4096];
    int fd = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (fd < 0)
        return fail("socket(AF_VSOCK)");
    if (argc == 5 && strcmp(argv[1], "connect") == 0) {
        struct sockaddr_vm addr = {.svm_family = AF_VSOCK,
                                   .svm_cid = (unsigned)strtoul(argv[2], 0, 10),
                                   .svm_port = (unsigned)strtoul(argv[3], 0, 10)};
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0)
            return fail("connect");
        snprintf(line, sizeof line, "%s\n", argv[4]);
        if (write_all(fd, line, strlen(line)) != 0)
            return fail("write");
        if (read_line(fd, line, sizeof line) <= 0)
            return fail("read");
        fputs(line, stdout);
        close(fd);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "serve") == 0) {
        struct sockaddr_vm addr = {.svm_family = AF_VSOCK,
                                   .svm_cid = VMADDR_CID_ANY,
                                   .svm_port = (unsigned)strtoul(argv[2], 0, 10)};
        if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0)
            return fail("bind");
        if (listen(fd, 1) != 0)
            return fail("listen");
        int conn = accept(fd, 0, 0);
        if (conn < 0)
            return fail("accept");
        if (read_line(conn, line, sizeof line) <= 0)
            return fail("read");
        printf("served: %s", line);
        for (char *p = line; *p; p++)
            *p = (char)toupper((unsigned char)*p);
        if (write_all(conn, line, strlen(line)) != 0)
            return fail("write");
        close(conn);
        close(fd);
        return 0;
    }
    fprintf(stderr, "usage: vsock-helper connect CID PORT MESSAGE | serve PORT\n");
    return 2;
}
