/*
 * virtio_blk: drive a virtio-blk PCI device with the runtime's virtio driver, at CPL3.
 *
 * main() (CPL0) only installs the MSI-X interrupt handler, enables the LAPIC and interrupts, and enters
 * CPL3; everything else runs at CPL3: PCI enumeration through 0xCF8/0xCFC, the BAR through the identity
 * map, requests by polling the used ring. One request takes an MSI-X interrupt (handled at CPL0) to prove
 * the vector -> GSI -> irqfd path; the vector is masked afterwards.
 *
 * Command line: op=read|write|bench (default read), start=SECTOR (0), sectors=N (8), seed=S (1),
 * pattern=seq|rand (seq), size=BYTES (4096: per bench request), count=N (bench requests), qd=N (1).
 * Output (each line printed only when it applies):
 *   virtio-blk: capacity N sectors
 *   virtio-blk: serial SERIAL
 *   virtio-blk: msi-x interrupt ok
 *   read N sectors at S: fnv 0x<16 hex>          (FNV-1a 64 of the bytes)
 *   write N sectors at S: status K               (K = 0 ok, 1 IOERR, 2 UNSUPP)
 *   flush: status K
 *   verify: ok                                   (or "verify: FAILED at byte B")
 *   bench: seq|rand N x SIZE bytes qd Q: T us, M MiB/s, I IOPS, K kicks
 *   virtio-blk done
 * Write pattern: byte i of the written range is (uint8_t)(i * 13 + (i >> 9) * 7 + seed).
 */
#include "lapic.h"
#include "runtime.h"
#include "virtio.h"

#define WHO "virtio-blk"
#define IRQ_VECTOR 0x50
#define QUEUE_SIZE 128
#define MAX_QD 32
#define BUF_SIZE (4u << 20)
#define SECTOR 512

#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8

struct blk_header {
    uint32_t type;
    uint32_t reserved;
    uint64_t sector;
};

static uint8_t queue_mem[VIRTQ_MEMORY(QUEUE_SIZE)] __attribute__((aligned(4096)));
static uint8_t buf[BUF_SIZE] __attribute__((aligned(4096)));
static struct blk_header headers[MAX_QD];
static volatile uint8_t statuses[MAX_QD];
static struct virtio_dev dev;
static struct virtq vq;
static volatile unsigned interrupts;

static void msix_interrupt(unsigned vector)
{
    (void)vector;
    if (dev.mmio)
        virtio_read_isr(&dev); /* read and acknowledge InterruptStatus */
    interrupts++;
    lapic_eoi();
}

/* IOAPIC redirection entry of `pin`: fixed delivery, physical destination, edge, active high. */
static void ioapic_route(unsigned pin, unsigned vector, unsigned dest_apic_id, bool masked)
{
    const uintptr_t ioapic = 0xFEC00000;
    mmio_write32(ioapic, 0x10 + 2 * pin + 1);
    mmio_write32(ioapic + 0x10, dest_apic_id << 24);
    mmio_write32(ioapic, 0x10 + 2 * pin);
    mmio_write32(ioapic + 0x10, vector | (masked ? 0x10000u : 0));
}

NORETURN static void fail(const char *what) { virtio_fail(&dev, WHO, "%s", what); }

/* Slot i uses descriptors 3i (header), 3i+1 (data), 3i+2 (status). */
static void submit(unsigned slot, uint32_t type, uint64_t sector, void *data, uint32_t len)
{
    uint16_t d = (uint16_t)(3 * slot);
    headers[slot] = (struct blk_header){type, 0, sector};
    statuses[slot] = 0xFF;
    vq.desc[d] = (struct virtq_desc){(uintptr_t)&headers[slot], sizeof(struct blk_header), VIRTQ_DESC_F_NEXT,
                                     (uint16_t)(d + (len ? 1 : 2))};
    if (len)
        vq.desc[d + 1] = (struct virtq_desc){(uintptr_t)data, len,
                                             VIRTQ_DESC_F_NEXT | (type == VIRTIO_BLK_T_OUT ? 0 : VIRTQ_DESC_F_WRITE),
                                             (uint16_t)(d + 2)};
    vq.desc[d + 2] = (struct virtq_desc){(uintptr_t)&statuses[slot], 1, VIRTQ_DESC_F_WRITE, 0};
    virtq_publish(&vq, d);
}

static unsigned wait_used(void)
{
    uint32_t id, len;
    if (!virtq_wait_used(&vq, &id, &len, VIRTQ_WAIT_LONG, NULL))
        fail("no completion");
    if (id % 3 || id / 3 >= MAX_QD)
        fail("bad used id");
    return id / 3;
}

static uint8_t request(uint32_t type, uint64_t sector, void *data, uint32_t len)
{
    submit(0, type, sector, data, len);
    virtq_kick(&vq);
    wait_used();
    return statuses[0];
}

static uint64_t fnv1a(const uint8_t *p, size_t n, uint64_t h)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static uint8_t pattern(uint64_t i, uint64_t seed) { return (uint8_t)(i * 13 + (i >> 9) * 7 + seed); }

static void do_read(uint64_t start, uint64_t sectors)
{
    uint64_t hash = 0xcbf29ce484222325ull;
    for (uint64_t done = 0; done < sectors;) {
        uint64_t n = sectors - done < BUF_SIZE / SECTOR ? sectors - done : BUF_SIZE / SECTOR;
        uint8_t status = request(VIRTIO_BLK_T_IN, start + done, buf, (uint32_t)(n * SECTOR));
        if (status != 0) {
            printf("read %lu sectors at %lu: status %u\n", sectors, start, status);
            return;
        }
        hash = fnv1a(buf, n * SECTOR, hash);
        done += n;
    }
    printf("read %lu sectors at %lu: fnv 0x%016lx\n", sectors, start, hash);
}

static void do_write(uint64_t start, uint64_t sectors, uint64_t seed)
{
    if (sectors * SECTOR > BUF_SIZE)
        fail("write larger than the buffer");
    size_t bytes = sectors * SECTOR;
    for (size_t i = 0; i < bytes; i++)
        buf[i] = pattern(i, seed);
    uint8_t status = request(VIRTIO_BLK_T_OUT, start, buf, (uint32_t)bytes);
    printf("write %lu sectors at %lu: status %u\n", sectors, start, status);
    printf("flush: status %u\n", request(VIRTIO_BLK_T_FLUSH, 0, 0, 0));
    if (status != 0)
        return;
    memset(buf, 0, bytes);
    if (request(VIRTIO_BLK_T_IN, start, buf, (uint32_t)bytes) != 0)
        fail("read back");
    for (size_t i = 0; i < bytes; i++)
        if (buf[i] != pattern(i, seed)) {
            printf("verify: FAILED at byte %lu\n", i);
            return;
        }
    printf("verify: ok\n");
}

static void do_bench(uint64_t capacity)
{
    bool random = cmdline_value_is("pattern=", "rand");
    uint64_t size = cmdline_get_u64("size=", 4096), count = cmdline_get_u64("count=", 1000);
    uint64_t qd = cmdline_get_u64("qd=", 1);
    uint64_t span = size / SECTOR;
    if (size == 0 || size % SECTOR || qd == 0 || qd > MAX_QD || qd * size > BUF_SIZE || span > capacity ||
        size > 0xFFFFFFFFull)
        fail("bad bench arguments");
    uint64_t ms = tsc_per_ms();
    uint64_t slots_per_disk = capacity / span, next = 0, rng = 0x9E3779B97F4A7C15ull;
    uint64_t submitted = 0, completed = 0;
    uint64_t t0 = rdtsc();
    for (; submitted < qd && submitted < count; submitted++) {
        uint64_t slot = random ? (rng = rng * 6364136223846793005ull + 1) >> 33 : next++;
        submit((unsigned)submitted, VIRTIO_BLK_T_IN, (slot % slots_per_disk) * span, buf + submitted * size,
               (uint32_t)size);
    }
    virtq_kick(&vq);
    while (completed < count) {
        unsigned s = wait_used();
        if (statuses[s] != 0) {
            printf("bench: request %lu at sector %lu: status %u\n", completed, headers[s].sector, statuses[s]);
            fail("bench request");
        }
        completed++;
        bool more = false;
        if (submitted < count) {
            uint64_t slot = random ? (rng = rng * 6364136223846793005ull + 1) >> 33 : next++;
            submit(s, VIRTIO_BLK_T_IN, (slot % slots_per_disk) * span, buf + s * size, (uint32_t)size);
            submitted++;
            more = true;
        }
        if (more)
            virtq_kick(&vq);
    }
    uint64_t cycles = rdtsc() - t0;
    uint64_t us = ms ? cycles * 1000 / ms : 0;
    uint64_t mib_s = us ? count * size * 1000000 / us / (1 << 20) : 0;
    uint64_t iops = us ? count * 1000000 / us : 0;
    printf("bench: %s %lu x %lu bytes qd %lu: %lu us, %lu MiB/s, %lu IOPS, %lu kicks\n", random ? "rand" : "seq",
           count, size, qd, us, mib_s, iops, vq.kicks);
}

static void user_main(void)
{
    uint64_t wanted = VIRTIO_F_VERSION_1 | (cmdline_value_is("event_idx=", "0") ? 0 : VIRTIO_F_EVENT_IDX);
    virtio_setup(&dev, WHO, VIRTIO_ID_BLOCK, wanted, (struct virtq *[]){&vq}, 1, QUEUE_SIZE, queue_mem, 0);
    if (!dev.device_cfg || (!dev.mmio && dev.msix_vectors < 1))
        fail("virtio capabilities");
    virtio_msix_set(&dev, 0, LAPIC_BASE | (uint64_t)lapic_id() << 12, IRQ_VECTOR, false);
    virtio_msix_enable(&dev);
    if (dev.mmio) /* virtio-mmio: the wired interrupt the DSDT names, edge-triggered, to this CPU */
        ioapic_route(dev.mmio_gsi, IRQ_VECTOR, lapic_id(), false);
    if (virtio_driver_ok(&dev) != 0)
        fail("DRIVER_OK");
    uint64_t capacity = virtio_config_read64(&dev, 0);
    printf("virtio-blk: capacity %lu sectors\n", capacity);

    /* The first request completes with MSI-X vector 0 (the handler runs at CPL0). Wait for the interrupt
     * before looking at the used ring: a driver that consumed the entry first would move used_event past
     * it, and the device would rightly send no interrupt (EVENT_IDX, virtio 1.2 §2.7.10). */
    static char serial[21];
    submit(0, VIRTIO_BLK_T_GET_ID, 0, serial, 20);
    virtq_kick(&vq);
    for (uint64_t t0 = rdtsc(); interrupts == 0; cpu_relax())
        if (rdtsc() - t0 > 20000000000ull)
            fail("no interrupt");
    wait_used();
    if (statuses[0] != 0)
        fail("GET_ID");
    printf("virtio-blk: serial %s\n", serial);
    if (dev.mmio)
        printf("virtio-blk: mmio interrupt ok (gsi %u)\n", dev.mmio_gsi);
    else
        printf("virtio-blk: msi-x interrupt ok\n");
    virtio_msix_set(&dev, 0, LAPIC_BASE | (uint64_t)lapic_id() << 12, IRQ_VECTOR, true); /* poll from now on */
    if (dev.mmio)
        ioapic_route(dev.mmio_gsi, IRQ_VECTOR, lapic_id(), true);

    uint64_t start = cmdline_get_u64("start=", 0), sectors = cmdline_get_u64("sectors=", 8);
    if (cmdline_value_is("op=", "write"))
        do_write(start, sectors, cmdline_get_u64("seed=", 1));
    else if (cmdline_value_is("op=", "bench"))
        do_bench(capacity);
    else
        do_read(start, sectors);
    printf("virtio-blk done\n");
    poweroff();
}

void main(struct hvm_start_info *start_info)
{
    (void)start_info;
    outb(0x21, 0xFF); /* mask the 8259s: only MSI-X interrupts here */
    outb(0xA1, 0xFF);
    irq_set_handler(IRQ_VECTOR, msix_interrupt);
    lapic_write(LAPIC_SVR, LAPIC_SVR_ENABLE | LAPIC_SPURIOUS_VECTOR);
    lapic_write(LAPIC_TPR, 0);
    /* CPL3 keeps IF=1 (enter_user keeps the flag), so the MSI-X interrupt is taken at CPL0 from there. */
    __asm__ volatile("sti" ::: "memory");
    enter_user(user_main, user_stack_top);
}
