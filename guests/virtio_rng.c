/*
 * virtio_rng: read random bytes from a virtio-rng PCI device at CPL3 and show they are not constant.
 * Command line: bytes=N (default 4096, at most 65536), in requests of at most 4096 bytes.
 * Output:
 *   virtio-rng: read N bytes in R requests
 *   virtio-rng: distinct byte values D
 *   virtio-rng: ones B of T bits
 *   virtio-rng: first and second half differ      (or "... are equal")
 *   virtio-rng done
 */
#include "runtime.h"
#include "virtio.h"

#define WHO "virtio-rng"
#define QUEUE_SIZE 16
#define MAX_BYTES 65536
#define CHUNK 4096

static uint8_t queue_mem[VIRTQ_MEMORY(QUEUE_SIZE)] __attribute__((aligned(4096)));
static uint8_t data[MAX_BYTES] __attribute__((aligned(4096)));
static struct virtio_dev dev;
static struct virtq vq;

NORETURN static void fail(const char *what) { virtio_fail(&dev, WHO, "%s", what); }

static void user_main(void)
{
    virtio_setup(&dev, WHO, VIRTIO_ID_RNG, VIRTIO_F_VERSION_1, (struct virtq *[]){&vq}, 1, QUEUE_SIZE, queue_mem,
                 VIRTIO_MSI_NO_VECTOR);
    virtio_driver_ok(&dev);

    uint64_t want = cmdline_get_u64("bytes=", 4096);
    if (want == 0 || want > MAX_BYTES)
        fail("bad bytes=");
    uint64_t got = 0, requests = 0;
    while (got < want) {
        uint32_t len = want - got < CHUNK ? (uint32_t)(want - got) : CHUNK;
        virtq_add_buffer(&vq, 0, data + got, len, VIRTQ_DESC_F_WRITE);
        virtq_kick(&vq);
        uint32_t id, used;
        if (!virtq_wait_used(&vq, &id, &used, VIRTQ_WAIT_LONG, NULL))
            fail("no completion");
        if (id != 0 || used > len)
            fail("bad used element");
        got += used;
        requests++;
    }
    bool seen[256] = {false};
    unsigned distinct = 0;
    uint64_t ones = 0;
    for (uint64_t i = 0; i < want; i++) {
        if (!seen[data[i]]) {
            seen[data[i]] = true;
            distinct++;
        }
        for (uint8_t b = data[i]; b; b &= (uint8_t)(b - 1))
            ones++;
    }
    printf("virtio-rng: read %lu bytes in %lu requests\n", want, requests);
    printf("virtio-rng: distinct byte values %u\n", distinct);
    printf("virtio-rng: ones %lu of %lu bits\n", ones, want * 8);
    bool differ = want >= 2 && memcmp(data, data + want / 2, want / 2) != 0;
    printf("virtio-rng: first and second half %s\n", differ ? "differ" : "are equal");
    printf("virtio-rng done\n");
    poweroff();
}

void main(struct hvm_start_info *start_info)
{
    (void)start_info;
    enter_user(user_main, user_stack_top);
}
