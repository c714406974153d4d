/*
 * virtio_vsock: a minimal vsock stream endpoint on a virtio-vsock device, at CPL3, by polling.
 *
 * Command line:
 *   op=connect|listen (listen)  port=P (1234): connect to host port P, or accept connections to guest port P
 *   conns=N (1): connections to serve before powering off
 *   credit=BYTES (65536): the buf_alloc this guest advertises; it consumes data at once but only tells the
 *     device so (fwd_cnt) in CREDIT_UPDATEs after each echo, and checks the device never exceeds it
 *   hostile=0|1: first send broken packets (see below)
 *   timeout_ms=N (30000)
 * Each connection: the guest sends "hello from guest\n", then echoes every byte it receives, upper-cased,
 * until the host shuts its side down; it then sends what is left and answers with RST. Serial output:
 *   "vsock: guest cid C"
 *   "vsock: connected to host port P" | "vsock: accepted host port P on port Q"
 *   "vsock: closed after N bytes, max in flight M"          (M: the most unacknowledged bytes seen)
 *   "vsock: refused by host port P"                           (op=connect and the host answers RST)
 *   "vsock: CREDIT VIOLATED: ..."                             (never, unless the device ignores credit)
 *   "vsock done"
 * hostile=1 prints "hostile: rst for rw on no connection", "hostile: rst for seqpacket request",
 * "hostile: rst for unknown op", then goes on; packets with a lying length, a wrong source CID or a
 * device-writable buffer get no answer at all.
 */
#include "runtime.h"
#include "virtio.h"

#define WHO "vsock"
#define RXQ 0
#define TXQ 1
#define EVQ 2
#define QUEUE_SIZE 64
#define RX_BUF (4096 + 44)
#define TX_SLOTS 32
#define TX_BUF (4096 + 44)
#define HDR 44
#define HOST_CID 2

#define OP_REQUEST 1
#define OP_RESPONSE 2
#define OP_RST 3
#define OP_SHUTDOWN 4
#define OP_RW 5
#define OP_CREDIT_UPDATE 6
#define OP_CREDIT_REQUEST 7

struct vsock_hdr {
    uint64_t src_cid, dst_cid;
    uint32_t src_port, dst_port, len;
    uint16_t type, op;
    uint32_t flags, buf_alloc, fwd_cnt;
} __attribute__((packed));

static uint8_t queue_mem[3][VIRTQ_MEMORY(QUEUE_SIZE)] __attribute__((aligned(4096)));
static uint8_t rx_bufs[QUEUE_SIZE][RX_BUF];
static uint8_t tx_bufs[TX_SLOTS][TX_BUF];
static uint8_t ev_bufs[4][8];
static bool tx_busy[TX_SLOTS];
static struct virtio_dev dev;
static struct virtq rxq, txq, evq;
static uint64_t my_cid, ms_ticks;

/* The one connection being served. */
static uint32_t local_port, peer_port;
static uint32_t fwd_cnt;            /* bytes consumed (what we tell the device) */
static uint32_t rx_total;           /* bytes received */
static uint32_t tx_cnt;             /* bytes sent */
static uint32_t peer_buf_alloc, peer_fwd_cnt;
static uint32_t credit, max_in_flight;
#define PENDING_MAX 65536

NORETURN static void fail(const char *what) { virtio_fail(&dev, WHO, "%s", what); }

static void tx_reclaim(void)
{
    uint32_t id, len;
    while (virtq_get_used(&txq, &id, &len)) {
        if (id >= TX_SLOTS || !tx_busy[id])
            fail("bad used id on the transmit queue");
        tx_busy[id] = false;
    }
}

static unsigned tx_slot(void)
{
    for (uint64_t spins = 0;; spins++) {
        for (unsigned i = 0; i < TX_SLOTS; i++)
            if (!tx_busy[i])
                return i;
        tx_reclaim();
        if (spins > 4000000000ull)
            fail("transmit completions stopped");
        cpu_relax();
    }
}

/* Send a packet: header fields plus `len` bytes of `data`, in one descriptor (or as `flags` say). */
static void send_raw(const struct vsock_hdr *h, const void *data, uint32_t len, uint32_t desc_len, uint16_t dflags)
{
    unsigned s = tx_slot();
    memcpy(tx_bufs[s], h, HDR);
    if (len)
        memcpy(tx_bufs[s] + HDR, data, len);
    tx_busy[s] = true;
    virtq_add_buffer(&txq, (uint16_t)s, tx_bufs[s], desc_len, dflags);
    virtq_kick(&txq);
}

static void send(uint16_t op, uint32_t flags, const void *data, uint32_t len)
{
    struct vsock_hdr h = {my_cid, HOST_CID, local_port, peer_port, len, 1, op, flags, credit, fwd_cnt};
    send_raw(&h, data, len, HDR + len, 0);
    tx_cnt += op == OP_RW ? len : 0;
}

static void rx_repost(uint32_t id)
{
    virtq_publish(&rxq, (uint16_t)id);
    virtq_kick(&rxq);
}

/* The next received packet: its header (copied) and data (in the receive buffer `*id`). */
static bool rx_packet(struct vsock_hdr *h, uint8_t **data, uint32_t *id, uint64_t timeout_ms)
{
    uint32_t len;
    if (!virtq_wait_used(&rxq, id, &len, timeout_ms * ms_ticks, tx_reclaim))
        return false;
    if (*id >= QUEUE_SIZE || len < HDR || len > RX_BUF)
        fail("bad used element on the receive queue");
    memcpy(h, rx_bufs[*id], HDR);
    if (h->len != len - HDR)
        fail("header len differs from the used length");
    if (h->src_cid != HOST_CID || h->dst_cid != my_cid || h->type != 1)
        fail("packet with wrong CIDs or type");
    *data = rx_bufs[*id] + HDR;
    return true;
}

static void expect_rst(const char *what, uint32_t port)
{
    struct vsock_hdr h;
    uint8_t *data;
    uint32_t id;
    if (!rx_packet(&h, &data, &id, 5000))
        fail("no answer to a hostile packet");
    if (h.op != OP_RST || h.dst_port != port)
        fail("expected a RST");
    rx_repost(id);
    printf("hostile: rst for %s\n", what);
}

static void hostile(void)
{
    struct vsock_hdr h = {my_cid, HOST_CID, 40000, 5, 0, 1, OP_RW, 0, 65536, 0};
    static const char junk[] = "junk";
    /* RW on a connection that does not exist: RST. */
    send_raw(&h, junk, 4, HDR + 4, 0);
    h.len = 4;
    expect_rst("rw on no connection", 40000);
    /* A header whose len says 1000 bytes while 4 follow: dropped. */
    h.len = 1000;
    h.src_port = 40001;
    send_raw(&h, junk, 4, HDR + 4, 0);
    /* A wrong source CID: dropped. */
    h = (struct vsock_hdr){my_cid + 1, HOST_CID, 40002, 5, 0, 1, OP_REQUEST, 0, 65536, 0};
    send_raw(&h, 0, 0, HDR, 0);
    /* A device-writable transmit buffer: dropped. */
    h = (struct vsock_hdr){my_cid, HOST_CID, 40003, 5, 0, 1, OP_REQUEST, 0, 65536, 0};
    send_raw(&h, 0, 0, HDR, VIRTQ_DESC_F_WRITE);
    /* A SEQPACKET connection request: RST. */
    h = (struct vsock_hdr){my_cid, HOST_CID, 40004, 5, 0, 2, OP_REQUEST, 0, 65536, 0};
    send_raw(&h, 0, 0, HDR, 0);
    expect_rst("seqpacket request", 40004);
    /* An operation that does not exist, on no connection: RST. */
    h = (struct vsock_hdr){my_cid, HOST_CID, 40005, 5, 0, 1, 99, 0, 65536, 0};
    send_raw(&h, 0, 0, HDR, 0);
    expect_rst("unknown op", 40005);
}

static uint32_t peer_credit(void) { return peer_buf_alloc - (tx_cnt - peer_fwd_cnt); }

static uint8_t pending[PENDING_MAX]; /* received, upper-cased, not yet sent back: a ring */
static uint32_t pending_head, pending_len;

/* Echo loop of one established connection. Received bytes wait in `pending` until the host's credit lets
 * them go back; only then are they consumed (fwd_cnt), so pending never exceeds our credit. */
static void serve(uint64_t timeout_ms)
{
    static const char hello[] = "hello from guest\n";
    send(OP_RW, 0, hello, sizeof hello - 1);
    uint32_t echoed = 0;
    bool closing = false, asked = false;
    pending_head = pending_len = 0;
    for (;;) {
        while (pending_len > 0 && peer_credit() > 0) {
            uint32_t n = pending_len, room = PENDING_MAX - pending_head;
            n = n < room ? n : room;
            n = n < peer_credit() ? n : peer_credit();
            n = n < 4096 ? n : 4096;
            fwd_cnt += n; /* this packet tells the device the bytes are consumed */
            send(OP_RW, 0, pending + pending_head, n);
            pending_head = (pending_head + n) % PENDING_MAX;
            pending_len -= n;
            echoed += n;
            asked = false;
        }
        if (pending_len > 0 && !asked) {
            send(OP_CREDIT_REQUEST, 0, 0, 0);
            asked = true;
        }
        if (closing && pending_len == 0) {
            send(OP_RST, 0, 0, 0);
            printf("vsock: closed after %u bytes, max in flight %u\n", echoed, max_in_flight);
            return;
        }
        struct vsock_hdr h;
        uint8_t *data;
        uint32_t id;
        if (!rx_packet(&h, &data, &id, timeout_ms))
            fail("timeout in a connection");
        if (h.src_port != peer_port || h.dst_port != local_port) {
            rx_repost(id); /* another connection: refuse it */
            struct vsock_hdr r = {my_cid, HOST_CID, h.dst_port, h.src_port, 0, 1, OP_RST, 0, 0, 0};
            if (h.op != OP_RST)
                send_raw(&r, 0, 0, HDR, 0);
            continue;
        }
        peer_buf_alloc = h.buf_alloc;
        peer_fwd_cnt = h.fwd_cnt;
        if (h.op == OP_RW) {
            rx_total += h.len;
            uint32_t in_flight = rx_total - fwd_cnt;
            if (in_flight > max_in_flight)
                max_in_flight = in_flight;
            if (in_flight > credit || pending_len + h.len > PENDING_MAX) {
                printf("vsock: CREDIT VIOLATED: %u bytes in flight, credit %u\n", in_flight, credit);
                poweroff();
            }
            for (uint32_t i = 0; i < h.len; i++) {
                uint8_t c = data[i];
                pending[(pending_head + pending_len + i) % PENDING_MAX] = c >= 'a' && c <= 'z' ? (uint8_t)(c - 32) : c;
            }
            pending_len += h.len;
            rx_repost(id);
        } else if (h.op == OP_CREDIT_REQUEST) {
            rx_repost(id);
            send(OP_CREDIT_UPDATE, 0, 0, 0);
        } else if (h.op == OP_CREDIT_UPDATE) {
            rx_repost(id);
        } else if (h.op == OP_SHUTDOWN) {
            rx_repost(id);
            closing = true;
        } else if (h.op == OP_RST) {
            rx_repost(id);
            printf("vsock: reset after %u bytes\n", echoed);
            return;
        } else {
            fail("unexpected packet on the connection");
        }
    }
}

static void reset_connection(void)
{
    fwd_cnt = rx_total = tx_cnt = 0;
    peer_buf_alloc = peer_fwd_cnt = 0;
    max_in_flight = 0;
}

static void user_main(void)
{
    ms_ticks = tsc_per_ms();
    virtio_setup(&dev, WHO, VIRTIO_ID_VSOCK, VIRTIO_F_VERSION_1 | VIRTIO_F_EVENT_IDX,
                 (struct virtq *[]){[RXQ] = &rxq, [TXQ] = &txq, [EVQ] = &evq}, 3, QUEUE_SIZE, queue_mem,
                 VIRTIO_MSI_NO_VECTOR);
    if (!dev.device_cfg)
        fail("virtio capabilities");
    for (uint16_t i = 0; i < QUEUE_SIZE; i++)
        virtq_add_buffer(&rxq, i, rx_bufs[i], RX_BUF, VIRTQ_DESC_F_WRITE);
    for (uint16_t i = 0; i < 4; i++)
        virtq_add_buffer(&evq, i, ev_bufs[i], 8, VIRTQ_DESC_F_WRITE);
    virtio_driver_ok(&dev);
    virtq_kick(&rxq);
    virtq_kick(&evq);
    my_cid = virtio_config_read64(&dev, 0);
    printf("vsock: guest cid %lu\n", my_cid);
    credit = (uint32_t)cmdline_get_u64("credit=", 65536);
    if (credit > PENDING_MAX)
        fail("credit= is at most 65536");
    uint64_t timeout_ms = cmdline_get_u64("timeout_ms=", 30000);
    uint32_t port = (uint32_t)cmdline_get_u64("port=", 1234);
    if (cmdline_value_is("hostile=", "1"))
        hostile();
    uint64_t conns = cmdline_get_u64("conns=", 1);
    bool connect = cmdline_value_is("op=", "connect");
    for (uint64_t c = 0; c < conns; c++) {
        reset_connection();
        struct vsock_hdr h;
        uint8_t *data;
        uint32_t id;
        if (connect) {
            local_port = 50000 + (uint32_t)c;
            peer_port = port;
            send(OP_REQUEST, 0, 0, 0);
            if (!rx_packet(&h, &data, &id, timeout_ms))
                fail("no answer to the connection request");
            rx_repost(id);
            if (h.op == OP_RST) {
                printf("vsock: refused by host port %u\n", port);
                continue;
            }
            if (h.op != OP_RESPONSE || h.src_port != port || h.dst_port != local_port)
                fail("expected a RESPONSE");
            peer_buf_alloc = h.buf_alloc;
            peer_fwd_cnt = h.fwd_cnt;
            printf("vsock: connected to host port %u\n", port);
        } else {
            for (;;) {
                if (!rx_packet(&h, &data, &id, timeout_ms))
                    fail("no connection request");
                rx_repost(id);
                if (h.op == OP_REQUEST && h.dst_port == port)
                    break;
                if (h.op != OP_RST) { /* anything else, to any other port: refused */
                    struct vsock_hdr r = {my_cid, HOST_CID, h.dst_port, h.src_port, 0, 1, OP_RST, 0, 0, 0};
                    send_raw(&r, 0, 0, HDR, 0);
                }
            }
            local_port = port;
            peer_port = h.src_port;
            peer_buf_alloc = h.buf_alloc;
            peer_fwd_cnt = h.fwd_cnt;
            send(OP_RESPONSE, 0, 0, 0);
            printf("vsock: accepted host port %u on port %u\n", peer_port, port);
        }
        serve(timeout_ms);
    }
    printf("vsock done\n");
    poweroff();
}

void main(struct hvm_start_info *start_info)
{
    (void)start_info;
    enter_user(user_main, user_stack_top);
}
