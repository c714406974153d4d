"""The ``/init`` of the default guest's initramfs (busybox ash), and the markers it prints.

Linux hands init every ``name=value`` kernel parameter whose name has no dot as an environment variable
(init/main.c, ``unknown_bootoption``; dotted names are taken for module parameters and dropped), with the
double quotes of ``name="a value with spaces"`` removed.  So ``aovisor_cmd="uname -r; nproc"`` on the
command line reaches init as ``$aovisor_cmd`` (it cannot contain a double quote).
"""

from __future__ import annotations

READY_MARKER = "AOVISOR-GUEST-READY"
EXIT_MARKER = "AOVISOR-GUEST-EXIT"  # followed by the command's exit status
COMMAND_PARAMETER = "aovisor_cmd"
MODULES_DIR = "lib/modules"
MODULE_LIST = f"{MODULES_DIR}/load"  # module names in load order, one a line
POWER_BUTTON_MARKER = "AOVISOR-GUEST-POWER-BUTTON"
# busybox acpid turns the power button's KEY_POWER (from /dev/input/event*) into the action "PWRF/00000080"
# and runs the file of that name under its config directory (busybox util-linux/acpid.c).
POWER_BUTTON_HANDLER = "etc/acpi/PWRF/00000080"


def command_line_parameter(command: str) -> str:
    """The kernel command-line parameter that makes the guest run ``command`` (a busybox ``sh -c`` script)."""
    if '"' in command:
        raise ValueError("the guest command cannot contain a double quote (the kernel strips them)")
    if "\n" in command:
        raise ValueError("the guest command must be one line (use ';')")
    return f'{COMMAND_PARAMETER}="{command}"'


INIT_SCRIPT = f"""#!/bin/sh
# aovisor's default guest: mount the kernel file systems, load the virtio modules, say we are ready, run
# the command from the kernel command line ({COMMAND_PARAMETER}="...") or a shell, then power off.
export PATH=/bin HOME=/root TERM=linux
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /tmp /root
mount -t devpts devpts /dev/pts

# Each after its dependencies (the build resolved them); a module the device does not need is harmless.
while read -r module; do
    insmod "/{MODULES_DIR}/$module.ko" || echo "aovisor-guest: insmod $module failed"
done </{MODULE_LIST}

# The ACPI power button (vm.power-button) powers the guest off, as systemd-logind or acpid would.
acpid -c /etc/acpi -l /dev/null 2>/dev/null || echo "aovisor-guest: acpid did not start"
echo {READY_MARKER}
if [ -n "${{{COMMAND_PARAMETER}+set}}" ]; then
    command=${COMMAND_PARAMETER}
    unset {COMMAND_PARAMETER}
    sh -c "$command"
    echo "{EXIT_MARKER} $?"
else
    echo "aovisor-guest: a shell; 'poweroff -f' or exiting it powers off" \\
        "(boot with {COMMAND_PARAMETER}=\\"COMMAND\\" on the kernel command line to run COMMAND instead)"
    # A shell with job control needs the console's own tty as its controlling terminal, not /dev/console.
    read -r consoles </sys/class/tty/console/active
    tty=/dev/${{consoles##* }}
    if [ -c "$tty" ]; then
        setsid -c sh -l <"$tty" >"$tty" 2>&1
    else
        sh -l
    fi
fi
poweroff -f
"""

POWER_BUTTON_SCRIPT = f"""#!/bin/sh
# Run by acpid when the power button is pressed: power off (init is a shell, not an init that a signal
# could ask to shut down, so write the file systems back and power off directly).
echo {POWER_BUTTON_MARKER} >/dev/console
sync
poweroff -f
"""
