#!/bin/sh
# L2 initramfs /init (busybox): load the modules the Debian cloud kernel does not build in,
# find the root disk by its virtio serial, and hand over to /sbin/lab-init on it.
export PATH=/bin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm  # mount points in the devtmpfs that becomes L2's /dev

fatal() {
    echo "lab-initramfs: FATAL: $*"
    poweroff -f
}

while read -r module params; do
    # shellcheck disable=SC2086  # params are words by design
    insmod "/modules/$module.ko" $params || echo "lab-initramfs: insmod $module failed"
done </modules/load

# virtio-blk probes asynchronously; wait (up to ~10 s) for the disk whose serial is "lab-root".
root=
tries=0
while [ -z "$root" ] && [ "$tries" -lt 200 ]; do
    for serial in /sys/block/*/serial; do
        [ -e "$serial" ] || continue
        read -r value <"$serial"
        if [ "$value" = lab-root ]; then
            root=${serial#/sys/block/}
            root=/dev/${root%/serial}
        fi
    done
    [ -n "$root" ] || { sleep 0.05; tries=$((tries + 1)); }
done
[ -n "$root" ] || fatal "no disk with serial lab-root"
mount -t ext4 "$root" /newroot || fatal "cannot mount $root"
cp /overlay/lab-init /newroot/sbin/lab-init
cp /overlay/fstab /newroot/etc/fstab
mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot /sbin/lab-init
