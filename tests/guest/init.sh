#!/bin/busybox sh
# /init of the test initramfs: reports what the guest itself sees, in lines the tests assert,
# then powers off. Runs under hyp and directly on QEMU (for the boot benchmark).
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
# Keep the console's serial port powered. Linux 6.12's serial core runtime-suspends a port
# idle for 500 ms and resumes it from a workqueue on the next write; a write that lands while
# it resumes can stay in the transmit buffer until the next write (the tests saw the line after
# the tmpfs checksum, the first write after a second of work, lost with the VM's poweroff).
for c in /sys/bus/serial-base/devices/*/power/control; do echo on >"$c"; done 2>/dev/null
echo "guest: init started"
ps=$(awk '/KernelPageSize/ {print $2 * 1024; exit}' /proc/self/smaps)
echo "guest: page size $ps"
echo "guest: cpus $(grep -c ^processor /proc/cpuinfo)"
echo "guest: cmdline $(cat /proc/cmdline)"
t0=$(cut -d' ' -f1 /proc/uptime)
sleep 2
t1=$(cut -d' ' -f1 /proc/uptime)
echo "guest: slept $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}') s"
dd if=/dev/urandom of=/tmp/data bs=1M count=8 2>/dev/null
s1=$(sha256sum /tmp/data | cut -d' ' -f1)
cp /tmp/data /tmp/copy
s2=$(sha256sum /tmp/copy | cut -d' ' -f1)
if [ "$s1" = "$s2" ]; then echo "guest: tmpfs checksum ok $s1"; else echo "guest: tmpfs checksum MISMATCH"; fi
echo "guest: done"
# The console's tty writes its last lines from the UART's TX interrupt; poweroff -f does not
# wait for that, so under load the last line could be lost with the VM. Let it drain.
sleep 0.3
poweroff -f
