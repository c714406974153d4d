/*
 * virtio_console: write to and read from a virtio-console device (the guest's hvc0) at CPL3, by polling.
 *
 * Command line: lines=N (3) lines written on the console, "hvc0 line i of N\n";
 *   echo=N (0): then read N bytes typed on the host and write them back upper-cased;
 *   emerg=0|1 (0): first write "EMERG\n" through the emerg_wr register (VIRTIO_CONSOLE_F_EMERG_WRITE);
 *   hostile=0|1 (0): first a transmit chain with a device-writable buffer ("BAD-WRITABLE") and a receive
 *   buffer the device may not write, both of which must come back unused;
 *   timeout_ms=N (20000).
 * Serial output (COM1): "virtio-console: size COLSxROWS features F", then, when asked,
 *   "virtio-console: hostile rx buffer: len L, untouched|WRITTEN", "virtio-console: echoed N bytes",
 *   and "virtio-console done".
 */
#include "runtime.h"
#include "virtio.h"

#define WHO "virtio-console"
#define VIRTIO_CONSOLE_F_SIZE (1ull << 0)
#define VIRTIO_CONSOLE_F_EMERG_WRITE (1ull << 2)
#define RXQ 0
#define TXQ 1
#define QUEUE_SIZE 16
#define BUF 256

static uint8_t queue_mem[2][VIRTQ_MEMORY(QUEUE_SIZE)] __attribute__((aligned(4096)));
static uint8_t rx_bufs[QUEUE_SIZE][BUF];
static uint8_t tx_buf[BUF];
static uint8_t bad_buf[BUF];
static struct virtio_dev dev;
static struct virtq rxq, txq;
static uint64_t ms_ticks;

NORETURN static void fail(const char *what) { virtio_fail(&dev, WHO, "%s", what); }

static void wait_used(struct virtq *q, uint32_t *id, uint32_t *len)
{
    if (!virtq_wait_used(q, id, len, cmdline_get_u64("timeout_ms=", 20000) * ms_ticks, NULL))
        fail("timeout");
}

/* Write `len` bytes on the console and wait until the device has taken them. */
static void console_write(const void *data, uint32_t len)
{
    if (len > BUF)
        fail("write too long");
    memcpy(tx_buf, data, len);
    virtq_add_buffer(&txq, 0, tx_buf, len, 0);
    virtq_kick(&txq);
    uint32_t id, used;
    wait_used(&txq, &id, &used);
    if (id != 0)
        fail("bad used id on the transmit queue");
}

static size_t format_line(char *out, uint64_t i, uint64_t n)
{
    const char *a = "hvc0 line ", *b = " of ";
    size_t k = 0;
    while (*a)
        out[k++] = *a++;
    char digits[20];
    int d = 0;
    do {
        digits[d++] = (char)('0' + i % 10);
        i /= 10;
    } while (i);
    while (d)
        out[k++] = digits[--d];
    while (*b)
        out[k++] = *b++;
    do {
        digits[d++] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    while (d)
        out[k++] = digits[--d];
    out[k++] = '\n';
    return k;
}

static void user_main(void)
{
    ms_ticks = tsc_per_ms();
    uint64_t wanted = VIRTIO_F_VERSION_1 | VIRTIO_F_EVENT_IDX | VIRTIO_CONSOLE_F_SIZE | VIRTIO_CONSOLE_F_EMERG_WRITE;
    virtio_setup(&dev, WHO, VIRTIO_ID_CONSOLE, wanted, (struct virtq *[]){[RXQ] = &rxq, [TXQ] = &txq}, 2, QUEUE_SIZE,
                 queue_mem, VIRTIO_MSI_NO_VECTOR);
    if (!dev.device_cfg)
        fail("virtio capabilities");
    bool hostile = cmdline_value_is("hostile=", "1");
    uint16_t first_rx = 0;
    if (hostile) { /* first in the receive ring: a buffer the device may only read */
        memset(bad_buf, 0xA5, BUF);
        virtq_add_buffer(&rxq, QUEUE_SIZE - 1, bad_buf, BUF, 0);
        first_rx = 1;
    }
    for (uint16_t i = 0; i < QUEUE_SIZE - first_rx; i++)
        virtq_add_buffer(&rxq, i, rx_bufs[i], BUF, VIRTQ_DESC_F_WRITE);
    virtio_driver_ok(&dev);
    virtq_kick(&rxq);
    printf("virtio-console: size %ux%u features 0x%lx\n", virtio_config_read8(&dev, 0) | virtio_config_read8(&dev, 1) << 8,
           virtio_config_read8(&dev, 2) | virtio_config_read8(&dev, 3) << 8, dev.features & 0xFF);

    if (cmdline_value_is("emerg=", "1")) {
        if (!(dev.features & VIRTIO_CONSOLE_F_EMERG_WRITE))
            fail("no EMERG_WRITE");
        for (const char *p = "EMERG\n"; *p; p++)
            mmio_write32(dev.device_cfg + 8, (uint8_t)*p);
    }
    if (hostile) {
        /* A transmit chain: a readable buffer, then a device-writable one (wrong direction). */
        memcpy(tx_buf, "BAD-WRITABLE\n", 13);
        txq.desc[1] = (struct virtq_desc){(uintptr_t)tx_buf, 13, VIRTQ_DESC_F_NEXT, 2};
        txq.desc[2] = (struct virtq_desc){(uintptr_t)bad_buf + 128, 16, VIRTQ_DESC_F_WRITE, 0};
        virtq_publish(&txq, 1);
        virtq_kick(&txq);
        uint32_t id, len;
        wait_used(&txq, &id, &len);
        if (id != 1 || len != 0)
            fail("the writable transmit chain came back wrong");
    }

    uint64_t lines = cmdline_get_u64("lines=", 3);
    for (uint64_t i = 1; i <= lines; i++) {
        char line[64];
        console_write(line, (uint32_t)format_line(line, i, lines));
    }

    uint64_t want = cmdline_get_u64("echo=", 0), got = 0;
    bool hostile_seen = !hostile;
    while (got < want || !hostile_seen) {
        uint32_t id, len;
        wait_used(&rxq, &id, &len);
        if (id == QUEUE_SIZE - 1 && hostile) {
            bool untouched = true;
            for (unsigned i = 0; i < BUF; i++)
                untouched &= bad_buf[i] == 0xA5;
            printf("virtio-console: hostile rx buffer: len %u, %s\n", len, untouched ? "untouched" : "WRITTEN");
            hostile_seen = true;
            continue;
        }
        if (id >= QUEUE_SIZE || len > BUF)
            fail("bad used element on the receive queue");
        uint8_t out[BUF];
        for (uint32_t i = 0; i < len; i++) {
            uint8_t c = rx_bufs[id][i];
            out[i] = c >= 'a' && c <= 'z' ? (uint8_t)(c - 32) : c;
        }
        console_write(out, len);
        got += len;
        virtq_publish(&rxq, (uint16_t)id);
        virtq_kick(&rxq);
    }
    if (want)
        printf("virtio-console: echoed %lu bytes\n", got);
    printf("virtio-console done\n");
    poweroff();
}

void main(struct hvm_start_info *start_info)
{
    (void)start_info;
    enter_user(user_main, user_stack_top);
}
