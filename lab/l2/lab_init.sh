#!/bin/bash
# L2 stage-two init (on the root image): mount the lab disks, run the command or a shell, power off.
# Kernel command line: lab.mode=run|shell, lab.deadline=<seconds since boot by which to be done>,
# lab.rows/lab.cols/lab.term (the host terminal, for the shell).
# Every exec costs L2 a few hundred milliseconds under software emulation, so this script uses bash
# builtins wherever it can and mounts everything with one `mount -a` (the image's /etc/fstab).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8

# Loading kvm_amd takes L2 seconds; let it overlap with the rest of the boot.
modprobe kvm_amd nested=1 &
kvm_loader=$!
mount -a
echo lab-l2 >/proc/sys/kernel/hostname
ip link set lo up

finish() {
    sync
    umount /lab /work 2>/dev/null
    busybox poweroff -f
}

mode=run deadline=0 rows= cols= term=vt100
read -r -a words </proc/cmdline
for word in "${words[@]}"; do
    case "$word" in
        lab.mode=*) mode=${word#lab.mode=} ;;
        lab.deadline=*) deadline=${word#lab.deadline=} ;;
        lab.rows=*) rows=${word#lab.rows=} ;;
        lab.cols=*) cols=${word#lab.cols=} ;;
        lab.term=*) term=${word#lab.term=} ;;
    esac
done

[ -d /lab/out ] || mkdir -p /lab/out
wait "$kvm_loader" || echo "lab: WARNING: modprobe kvm_amd failed: L2 has no /dev/kvm"
export LAB_WORK=/work LAB_EXTRA=/lab/extra LAB_OUT=/lab/out PYTHONPATH=/work/src

if [ "$mode" = shell ]; then
    [ -n "$rows" ] && stty -F /dev/ttyS0 rows "$rows" cols "$cols"
    echo "lab: shell ready; exit the shell to power off"
    cd /work 2>/dev/null || cd /
    TERM=$term setsid -c bash -l </dev/ttyS0 >/dev/ttyS0 2>&1
    finish
fi

if [ ! -f /lab/command.sh ]; then
    echo "lab: FATAL: no /lab/command.sh (lab disk missing?)"
    finish
fi
# Leave 5 s of the host's budget for unmounting and powering off.
read -r uptime _ </proc/uptime
budget=$((deadline - ${uptime%.*} - 5))
[ "$budget" -ge 1 ] || budget=1
cd /work 2>/dev/null || cd /
echo "lab: command start (budget ${budget}s)"
# timeout(1) signals the command's whole process group, so stray children (an L3 QEMU) die with it.
SECONDS=0
timeout -k 5 "$budget" bash /lab/command.sh </dev/null 2>&1 | tee /lab/output
status=${PIPESTATUS[0]}
[ "$SECONDS" -lt "$budget" ] || echo "$budget" >/lab/timed-out
echo "$status" >/lab/status
echo "lab: command exit $status"
finish
