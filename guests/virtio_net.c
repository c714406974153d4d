/*
 * virtio_net: drive a virtio-net device with the runtime's virtio driver, entirely at CPL3, by polling.
 *
 * Command line:
 *   op=echo|bench|hostile (echo)    mrg=0|1 (1: VIRTIO_NET_F_MRG_RXBUF)   csum=0|1 (1: CSUM + GUEST_CSUM)
 *   rxbuf=BYTES (2048: each receive buffer)   ip=A.B.C.D (10.0.0.2: answers ARP and UDP there)
 *   timeout_ms=N (20000: with nothing received for that long, give up)   event_idx=0|1 (1)
 *   bench: count=N (10000) size=BYTES (1514: frame without the vnet header) batch=BYTES (65536 per kick)
 *
 * echo: frames of ethertype 0x88B5 carry commands in their payload:
 *   "PING..."       answered with the same frame, "PONG" instead of "PING", addresses swapped
 *   "SEND n len"    n frames of `len` bytes, payload "FRAME i " then byte j = (uint8_t)(i + j)
 *   "SHOW..."       prints the frame's virtio-net header: "rx: len L flags F gso G csum_start S
 *                   csum_offset O num_buffers N"
 *   "BYE"           prints "virtio-net: rx R frames, tx T frames" and powers off
 * ARP requests for ip= are answered; a UDP datagram to ip= prints "udp: from PORT len L flags F
 * csum_start S csum_offset O checksum ok|bad" (a partial checksum, NEEDS_CSUM, is completed first) and is
 * echoed back to its sender, upper-cased, with NEEDS_CSUM and a pseudo-header sum when CSUM was
 * negotiated, else with a full checksum.
 *
 * bench: count frames to a unicast address nobody has, `batch` bytes of frames per kick, the completions
 * polled: "bench: tx N x SIZE bytes, batch B: T us, M MiB/s, F frames/s, K kicks".
 *
 * hostile: breaks the rules, then proves the device still works (each bad thing is followed by a valid
 * "ALIVE k" frame; the bad frames say "BAD"): a 6-byte transmit chain, a transmit chain with a
 * device-writable buffer, NEEDS_CSUM without CSUM (run with csum=0), a GSO frame without TSO, a partial
 * checksum outside the frame; on receive, a device-readable buffer and a 4-byte buffer, which must come
 * back empty and untouched before the next frame lands in a good buffer:
 *   "hostile: rx readable buffer: len L, untouched|WRITTEN", "hostile: rx short buffer: len L",
 *   "hostile: device status S" then the echo loop.
 */
#include "runtime.h"
#include "virtio.h"

#define WHO "virtio-net"
#define VIRTIO_NET_F_CSUM (1ull << 0)
#define VIRTIO_NET_F_GUEST_CSUM (1ull << 1)
#define VIRTIO_NET_F_MAC (1ull << 5)
#define VIRTIO_NET_F_MRG_RXBUF (1ull << 15)
#define VIRTIO_NET_HDR_F_NEEDS_CSUM 1
#define VIRTIO_NET_HDR_GSO_TCPV4 1

#define RXQ 0
#define TXQ 1
#define QUEUE_SIZE 256
#define RX_BUFFERS 128
#define MAX_RXBUF 4096
#define TX_SLOTS 256
#define TX_SLOT_SIZE 2048
#define HDR 12
#define ETH 14
#define ETHERTYPE_TEST 0x88B5
#define ETHERTYPE_IP 0x0800
#define ETHERTYPE_ARP 0x0806
#define MAX_FRAME 65536

struct net_hdr {
    uint8_t flags;
    uint8_t gso_type;
    uint16_t hdr_len;
    uint16_t gso_size;
    uint16_t csum_start;
    uint16_t csum_offset;
    uint16_t num_buffers;
} __attribute__((packed));

static uint8_t queue_mem[2][VIRTQ_MEMORY(QUEUE_SIZE)] __attribute__((aligned(4096)));
static uint8_t rx_bufs[RX_BUFFERS][MAX_RXBUF] __attribute__((aligned(4096)));
static uint8_t tx_bufs[TX_SLOTS][TX_SLOT_SIZE] __attribute__((aligned(4096)));
static uint8_t frame[MAX_FRAME]; /* a received frame, reassembled, header included */
static struct virtio_dev dev;
static struct virtq rxq, txq;
static uint8_t mac[6];
static uint8_t my_ip[4] = {10, 0, 0, 2};
static uint32_t rxbuf_size = 2048;
static unsigned tx_free = TX_SLOTS, tx_next;
static bool tx_busy[TX_SLOTS];
static uint64_t rx_frames, tx_frames, ms_ticks;
static bool use_csum;

NORETURN static void fail(const char *what) { virtio_fail(&dev, WHO, "%s", what); }

static uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static void put_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void parse_ip(void)
{
    const char *s = cmdline_get();
    for (size_t i = 0; s[i]; i++) {
        if ((i == 0 || s[i - 1] == ' ') && s[i] == 'i' && s[i + 1] == 'p' && s[i + 2] == '=') {
            const char *p = s + i + 3;
            for (int k = 0; k < 4; k++) {
                unsigned v = 0;
                while (*p >= '0' && *p <= '9')
                    v = v * 10 + (unsigned)(*p++ - '0');
                my_ip[k] = (uint8_t)v;
                if (*p == '.')
                    p++;
            }
            return;
        }
    }
}

/* --- Receive ------------------------------------------------------------------------------------------- */
static void rx_post(uint16_t index, uint16_t flags, uint32_t len)
{
    virtq_add_buffer(&rxq, index, rx_bufs[index], len, flags);
}

/* Next used receive buffer (id, len), waiting up to the timeout. */
static void rx_wait(uint32_t *id, uint32_t *len)
{
    if (!virtq_wait_used(&rxq, id, len, cmdline_get_u64("timeout_ms=", 20000) * ms_ticks, NULL)) {
        printf("virtio-net: timeout: rx %lu frames, tx %lu frames\n", rx_frames, tx_frames);
        poweroff();
    }
    if (*id >= RX_BUFFERS)
        fail("bad used id on the receive queue");
}

/* Receive one frame (header included) into `frame`; returns its length. */
static uint32_t rx_frame(void)
{
    uint32_t id, len, total = 0;
    rx_wait(&id, &len);
    if (len < HDR || len > rxbuf_size)
        fail("bad used length on the receive queue");
    memcpy(frame, rx_bufs[id], len);
    total = len;
    rx_post((uint16_t)id, VIRTQ_DESC_F_WRITE, rxbuf_size);
    uint16_t buffers = ((struct net_hdr *)frame)->num_buffers;
    if (!(dev.features & VIRTIO_NET_F_MRG_RXBUF) && buffers != 1)
        fail("num_buffers is not 1 without MRG_RXBUF");
    for (uint16_t b = 1; b < buffers; b++) {
        rx_wait(&id, &len);
        if (len > rxbuf_size || total + len > MAX_FRAME)
            fail("merged frame too long");
        memcpy(frame + total, rx_bufs[id], len);
        total += len;
        rx_post((uint16_t)id, VIRTQ_DESC_F_WRITE, rxbuf_size);
    }
    virtq_kick(&rxq);
    rx_frames++;
    return total;
}

/* --- Transmit ------------------------------------------------------------------------------------------ */
static void tx_reclaim(void)
{
    uint32_t id, len;
    while (virtq_get_used(&txq, &id, &len)) {
        if (id >= TX_SLOTS || !tx_busy[id]) {
            printf("virtio-net: transmit used id %u len %u\n", id, len);
            fail("bad used id on the transmit queue");
        }
        tx_busy[id] = false;
        tx_free++;
    }
}

/* A free slot's buffer (header first); waits for completions when all are in flight. */
static uint8_t *tx_slot(unsigned *slot)
{
    for (uint64_t spins = 0; tx_free == 0; spins++) {
        tx_reclaim();
        if (spins > 4000000000ull)
            fail("transmit completions stopped");
        cpu_relax();
    }
    while (tx_busy[tx_next])
        tx_next = (tx_next + 1) % TX_SLOTS;
    *slot = tx_next;
    tx_next = (tx_next + 1) % TX_SLOTS;
    memset(tx_bufs[*slot], 0, HDR);
    return tx_bufs[*slot];
}

/* Publish slot `slot` with `len` bytes (header included) as one descriptor of `flags`. */
static void tx_queue(unsigned slot, uint32_t len, uint16_t flags)
{
    tx_busy[slot] = true;
    tx_free--;
    virtq_add_buffer(&txq, (uint16_t)slot, tx_bufs[slot], len, flags);
    tx_frames++;
}

static void tx_send(unsigned slot, uint32_t len)
{
    tx_queue(slot, len, 0);
    virtq_kick(&txq);
}

static void eth_header(uint8_t *eth, const uint8_t *dst, uint16_t type)
{
    memcpy(eth, dst, 6);
    memcpy(eth + 6, mac, 6);
    put_be16(eth + 12, type);
}

/* --- Checksums (RFC 1071) ------------------------------------------------------------------------------ */
static uint32_t sum16(const uint8_t *p, size_t n, uint32_t sum)
{
    for (size_t i = 0; i + 1 < n; i += 2)
        sum += be16(p + i);
    if (n & 1)
        sum += (uint32_t)p[n - 1] << 8;
    return sum;
}

static uint16_t fold(uint32_t sum)
{
    while (sum >> 16)
        sum = (sum & 0xFFFF) + (sum >> 16);
    return (uint16_t)sum;
}

static uint32_t pseudo_header_sum(const uint8_t *ip, uint16_t udp_len)
{
    return sum16(ip + 12, 8, 0) + 17 + udp_len;
}

/* --- Protocols ----------------------------------------------------------------------------------------- */
static void answer_arp(const uint8_t *eth, uint32_t len)
{
    const uint8_t *arp = eth + ETH;
    if (len < ETH + 28 || be16(arp + 6) != 1 || memcmp(arp + 24, my_ip, 4) != 0)
        return;
    unsigned slot;
    uint8_t *out = tx_slot(&slot), *reply = out + HDR + ETH;
    eth_header(out + HDR, eth + 6, ETHERTYPE_ARP);
    memcpy(reply, arp, 6); /* htype, ptype, hlen, plen */
    put_be16(reply + 6, 2);
    memcpy(reply + 8, mac, 6);
    memcpy(reply + 14, my_ip, 4);
    memcpy(reply + 18, arp + 8, 10); /* the asker's MAC and IP */
    tx_send(slot, HDR + ETH + 28);
}

static void handle_udp(const struct net_hdr *h, uint8_t *eth, uint32_t len)
{
    uint8_t *ip = eth + ETH;
    unsigned ihl = (ip[0] & 15u) * 4;
    if (len < ETH + 20 || ip[9] != 17 || memcmp(ip + 16, my_ip, 4) != 0 || len < ETH + ihl + 8)
        return;
    uint8_t *udp = ip + ihl;
    uint16_t udp_len = be16(udp + 4);
    if (udp_len < 8 || ETH + ihl + udp_len > len)
        return;
    if (h->flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) { /* complete the partial checksum, as a NIC would */
        uint32_t start = h->csum_start, off = h->csum_offset;
        if (start + off + 2 > len)
            fail("NEEDS_CSUM offsets outside the frame");
        put_be16(eth + start + off, (uint16_t)~fold(sum16(eth + start, len - start, 0)));
    }
    bool ok = fold(pseudo_header_sum(ip, udp_len) + sum16(udp, udp_len, 0)) == 0xFFFF;
    printf("udp: from %u len %u flags %u csum_start %u csum_offset %u checksum %s\n", be16(udp), udp_len - 8,
           h->flags, h->csum_start, h->csum_offset, ok ? "ok" : "bad");
    /* Echo, upper-cased. */
    unsigned slot;
    uint8_t *out = tx_slot(&slot);
    struct net_hdr *oh = (struct net_hdr *)out;
    uint8_t *oeth = out + HDR, *oip = oeth + ETH, *oudp = oip + 20;
    if (HDR + ETH + 20u + udp_len > TX_SLOT_SIZE)
        return;
    eth_header(oeth, eth + 6, ETHERTYPE_IP);
    memset(oip, 0, 20);
    oip[0] = 0x45;
    put_be16(oip + 2, (uint16_t)(20 + udp_len));
    oip[8] = 64;
    oip[9] = 17;
    memcpy(oip + 12, my_ip, 4);
    memcpy(oip + 16, ip + 12, 4);
    put_be16(oip + 10, (uint16_t)~fold(sum16(oip, 20, 0)));
    put_be16(oudp, be16(udp + 2));
    put_be16(oudp + 2, be16(udp));
    put_be16(oudp + 4, udp_len);
    put_be16(oudp + 6, 0);
    for (unsigned i = 8; i < udp_len; i++) {
        uint8_t c = udp[i];
        oudp[i] = c >= 'a' && c <= 'z' ? (uint8_t)(c - 32) : c;
    }
    if (use_csum) { /* the device (the host kernel) finishes it: only the pseudo-header sum goes here */
        oh->flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
        oh->csum_start = ETH + 20;
        oh->csum_offset = 6;
        put_be16(oudp + 6, fold(pseudo_header_sum(oip, udp_len)));
    } else {
        uint16_t c = (uint16_t)~fold(pseudo_header_sum(oip, udp_len) + sum16(oudp, udp_len, 0));
        put_be16(oudp + 6, c ? c : 0xFFFF);
    }
    tx_send(slot, HDR + ETH + 20 + udp_len);
}

static uint64_t parse_number(const uint8_t **p, const uint8_t *end)
{
    uint64_t v = 0;
    while (*p < end && **p == ' ')
        (*p)++;
    while (*p < end && **p >= '0' && **p <= '9')
        v = v * 10 + (uint64_t)(*(*p)++ - '0');
    return v;
}

static void send_frames(uint64_t n, uint64_t len)
{
    if (len < ETH + 16 || len > TX_SLOT_SIZE - HDR)
        len = ETH + 16;
    static const uint8_t broadcast[6] = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF};
    for (uint64_t i = 0; i < n; i++) {
        unsigned slot;
        uint8_t *out = tx_slot(&slot), *eth = out + HDR;
        eth_header(eth, broadcast, ETHERTYPE_TEST);
        uint8_t *payload = eth + ETH;
        size_t room = len - ETH;
        for (size_t j = 0; j < room; j++)
            payload[j] = (uint8_t)(i + j);
        char label[24];
        int k = 0;
        const char *word = "FRAME ";
        while (*word)
            label[k++] = *word++;
        char digits[20];
        int d = 0;
        uint64_t v = i;
        do {
            digits[d++] = (char)('0' + v % 10);
            v /= 10;
        } while (v);
        while (d)
            label[k++] = digits[--d];
        label[k++] = ' ';
        memcpy(payload, label, (size_t)k);
        tx_queue(slot, (uint32_t)(HDR + len), 0);
        if ((i + 1) % 16 == 0 || i + 1 == n)
            virtq_kick(&txq);
    }
}

static void echo_loop(void)
{
    printf("virtio-net: ready\n");
    for (;;) {
        uint32_t len = rx_frame();
        tx_reclaim();
        struct net_hdr *h = (struct net_hdr *)frame;
        uint8_t *eth = frame + HDR;
        uint32_t elen = len - HDR;
        if (elen < ETH)
            continue;
        uint16_t type = be16(eth + 12);
        if (type == ETHERTYPE_ARP) {
            answer_arp(eth, elen);
            continue;
        }
        if (type == ETHERTYPE_IP) {
            handle_udp(h, eth, elen);
            continue;
        }
        if (type != ETHERTYPE_TEST || elen < ETH + 3)
            continue;
        const uint8_t *payload = eth + ETH, *end = eth + elen;
        if (memcmp(payload, "SHOW", 4) == 0) {
            printf("rx: len %u flags %u gso %u csum_start %u csum_offset %u num_buffers %u\n", elen, h->flags,
                   h->gso_type, h->csum_start, h->csum_offset, h->num_buffers);
        } else if (memcmp(payload, "PING", 4) == 0) {
            unsigned slot;
            uint8_t *out = tx_slot(&slot);
            if (HDR + elen > TX_SLOT_SIZE)
                continue;
            memcpy(out + HDR, eth, elen);
            memcpy(out + HDR, eth + 6, 6);
            memcpy(out + HDR + 6, mac, 6);
            memcpy(out + HDR + ETH, "PONG", 4);
            tx_send(slot, HDR + elen);
        } else if (memcmp(payload, "SEND", 4) == 0) {
            const uint8_t *p = payload + 4;
            uint64_t n = parse_number(&p, end), size = parse_number(&p, end);
            send_frames(n, size);
        } else if (memcmp(payload, "BYE", 3) == 0) {
            for (uint64_t spins = 0; tx_free < TX_SLOTS && spins < 100000000ull; spins++)
                tx_reclaim();
            printf("virtio-net: rx %lu frames, tx %lu frames\n", rx_frames, tx_frames);
            poweroff();
        }
    }
}

/* --- bench ---------------------------------------------------------------------------------------------- */
static void bench(void)
{
    uint64_t count = cmdline_get_u64("count=", 10000), size = cmdline_get_u64("size=", 1514);
    uint64_t batch = cmdline_get_u64("batch=", 65536);
    if (size < ETH || size > TX_SLOT_SIZE - HDR || batch < size)
        fail("bad bench arguments");
    static const uint8_t nobody[6] = {0x02, 0, 0, 0, 0, 0x99};
    for (unsigned s = 0; s < TX_SLOTS; s++) { /* the frames never change: fill the slots once */
        memset(tx_bufs[s], 0, HDR);
        eth_header(tx_bufs[s] + HDR, nobody, ETHERTYPE_TEST);
        for (uint64_t j = ETH; j < size; j++)
            tx_bufs[s][HDR + j] = (uint8_t)j;
    }
    uint64_t per_kick = batch / size, sent = 0;
    uint64_t t0 = rdtsc();
    while (sent < count) {
        tx_reclaim();
        uint64_t n = 0;
        while (n < per_kick && sent < count && tx_free > 0) {
            while (tx_busy[tx_next])
                tx_next = (tx_next + 1) % TX_SLOTS;
            unsigned slot = tx_next;
            tx_next = (tx_next + 1) % TX_SLOTS;
            tx_queue(slot, (uint32_t)(HDR + size), 0);
            n++;
            sent++;
        }
        if (n)
            virtq_kick(&txq);
        else
            cpu_relax();
    }
    for (uint64_t spins = 0; tx_free < TX_SLOTS; spins++) {
        tx_reclaim();
        if (spins > 4000000000ull)
            fail("transmit completions stopped");
    }
    uint64_t us = ms_ticks ? (rdtsc() - t0) * 1000 / ms_ticks : 0;
    uint64_t mib_s = us ? count * size * 1000000 / us / (1 << 20) : 0;
    uint64_t fps = us ? count * 1000000 / us : 0;
    printf("bench: tx %lu x %lu bytes, batch %lu: %lu us, %lu MiB/s, %lu frames/s, %lu kicks\n", count, size,
           batch, us, mib_s, fps, txq.kicks);
    printf("virtio-net done\n");
    poweroff();
}

/* --- hostile -------------------------------------------------------------------------------------------- */
static void alive(unsigned k)
{
    unsigned slot;
    uint8_t *out = tx_slot(&slot);
    static const uint8_t broadcast[6] = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF};
    eth_header(out + HDR, broadcast, ETHERTYPE_TEST);
    memcpy(out + HDR + ETH, "ALIVE ", 6);
    out[HDR + ETH + 6] = (uint8_t)('0' + k);
    tx_send(slot, HDR + ETH + 7);
    for (uint64_t spins = 0; tx_free < TX_SLOTS; spins++) { /* every chain must come back */
        tx_reclaim();
        if (spins > 4000000000ull)
            fail("a hostile transmit chain never came back");
    }
}

static uint8_t *bad_frame(unsigned *slot)
{
    uint8_t *out = tx_slot(slot);
    static const uint8_t broadcast[6] = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF};
    eth_header(out + HDR, broadcast, ETHERTYPE_TEST);
    memcpy(out + HDR + ETH, "BAD.......................................", 40);
    return out;
}

static void hostile(void)
{
    /* Receive: the first two buffers posted (before DRIVER_OK) were a device-readable one and a 4-byte
     * one; they must come back empty. A frame from the host (in a good buffer) says it is listening. */
    printf("hostile: waiting for a frame\n");
    bool seen_readable = false, seen_short = false, seen_frame = false;
    uint64_t limit = cmdline_get_u64("timeout_ms=", 20000) * ms_ticks, t0 = rdtsc();
    while (!seen_readable || !seen_short || !seen_frame) {
        uint32_t id, len;
        uint64_t spent = rdtsc() - t0; /* one deadline for all of them */
        if (!virtq_wait_used(&rxq, &id, &len, spent < limit ? limit - spent : 0, NULL))
            fail("no frame, or the bad receive buffers never came back");
        if (id == RX_BUFFERS - 1) {
            bool untouched = true;
            for (unsigned i = 0; i < 256; i++)
                untouched &= rx_bufs[id][i] == 0xA5;
            printf("hostile: rx readable buffer: len %u, %s\n", len, untouched ? "untouched" : "WRITTEN");
            seen_readable = true;
        } else if (id == RX_BUFFERS - 2) {
            printf("hostile: rx short buffer: len %u\n", len);
            seen_short = true;
        } else if (id < RX_BUFFERS) {
            rx_frames++; /* the host's own traffic (IPv6 neighbour discovery...) is not the signal */
            seen_frame |= len >= HDR + ETH && be16(rx_bufs[id] + HDR + 12) == ETHERTYPE_TEST;
            rx_post((uint16_t)id, VIRTQ_DESC_F_WRITE, rxbuf_size);
            virtq_kick(&rxq);
        } else {
            fail("bad used id on the receive queue");
        }
    }

    unsigned slot, slot2;
    /* A 6-byte chain: not even a virtio-net header. */
    bad_frame(&slot);
    tx_send(slot, 6);
    alive(1);
    /* A transmit chain whose second buffer is device-writable. */
    bad_frame(&slot);
    uint8_t *second = tx_slot(&slot2);
    memcpy(second, "BAD-WRITABLE", 12);
    txq.desc[slot] = (struct virtq_desc){(uintptr_t)tx_bufs[slot], HDR + ETH + 40, VIRTQ_DESC_F_NEXT, (uint16_t)slot2};
    txq.desc[slot2] = (struct virtq_desc){(uintptr_t)second, 64, VIRTQ_DESC_F_WRITE, 0};
    tx_busy[slot] = true;
    tx_free--;
    virtq_publish(&txq, (uint16_t)slot);
    virtq_kick(&txq);
    alive(2);
    /* NEEDS_CSUM when CSUM was not negotiated (or, with csum=1, a checksum offset outside the frame). */
    uint8_t *out = bad_frame(&slot);
    ((struct net_hdr *)out)->flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    ((struct net_hdr *)out)->csum_start = use_csum ? 60000 : ETH;
    ((struct net_hdr *)out)->csum_offset = 2;
    tx_send(slot, HDR + ETH + 40);
    alive(3);
    /* A TCPv4 GSO frame without HOST_TSO4 (never negotiated by this guest). */
    out = bad_frame(&slot);
    ((struct net_hdr *)out)->gso_type = VIRTIO_NET_HDR_GSO_TCPV4;
    ((struct net_hdr *)out)->gso_size = 1000;
    tx_send(slot, HDR + ETH + 40);
    alive(4);
    printf("hostile: device status 0x%x\n", virtio_status(&dev));
    echo_loop();
}

static void user_main(void)
{
    ms_ticks = tsc_per_ms();
    if (ms_ticks == 0)
        fail("TSC calibration");
    parse_ip();
    rxbuf_size = (uint32_t)cmdline_get_u64("rxbuf=", 2048);
    if (rxbuf_size < 16 || rxbuf_size > MAX_RXBUF)
        fail("rxbuf= must be 16-4096");
    uint64_t wanted = VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MAC;
    if (!cmdline_value_is("event_idx=", "0"))
        wanted |= VIRTIO_F_EVENT_IDX;
    if (!cmdline_value_is("mrg=", "0"))
        wanted |= VIRTIO_NET_F_MRG_RXBUF;
    if (!cmdline_value_is("csum=", "0"))
        wanted |= VIRTIO_NET_F_CSUM | VIRTIO_NET_F_GUEST_CSUM;
    virtio_setup(&dev, WHO, VIRTIO_ID_NET, wanted, (struct virtq *[]){[RXQ] = &rxq, [TXQ] = &txq}, 2, QUEUE_SIZE,
                 queue_mem, VIRTIO_MSI_NO_VECTOR);
    if (!dev.device_cfg)
        fail("virtio capabilities");
    use_csum = (dev.features & VIRTIO_NET_F_CSUM) != 0;
    bool hostile_mode = cmdline_value_is("op=", "hostile");
    if (hostile_mode) { /* first in the ring: a buffer the device may not write, and one too short */
        memset(rx_bufs[RX_BUFFERS - 1], 0xA5, 256);
        memset(rx_bufs[RX_BUFFERS - 2], 0xA5, 256);
        rx_post(RX_BUFFERS - 1, 0, 256);
        rx_post(RX_BUFFERS - 2, VIRTQ_DESC_F_WRITE, 4);
    }
    for (uint16_t i = 0; i < RX_BUFFERS - 2; i++)
        rx_post(i, VIRTQ_DESC_F_WRITE, rxbuf_size);
    if (virtio_driver_ok(&dev) != 0)
        fail("DRIVER_OK");
    virtq_kick(&rxq);
    for (unsigned i = 0; i < 6; i++)
        mac[i] = virtio_config_read8(&dev, i);
    printf("virtio-net: mac %02x:%02x:%02x:%02x:%02x:%02x, features mrg %u csum %u\n", mac[0], mac[1], mac[2],
           mac[3], mac[4], mac[5], (dev.features & VIRTIO_NET_F_MRG_RXBUF) != 0, use_csum);
    if (cmdline_value_is("op=", "bench"))
        bench();
    if (hostile_mode)
        hostile();
    echo_loop();
}

void main(struct hvm_start_info *start_info)
{
    (void)start_info;
    enter_user(user_main, user_stack_top);
}
