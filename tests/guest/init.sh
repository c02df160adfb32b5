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
# An assigned virtio-blk disk (virtio PCI vendor 0x1af4, block device 0x1001 or 0x1042):
# Debian builds the driver as a module. Its checksum is read by DMA; then a pattern is written
# at 1 MiB for the host to verify after exit (tests/qemu/run-linux).
if grep -qs -e 0x1001 -e 0x1042 /sys/bus/pci/devices/*/device; then
    insmod "/lib/modules/$(uname -r)/virtio_blk.ko" 2>&1 | head -n 3
    for _ in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vda ] && break; sleep 0.2; done
    if [ -b /dev/vda ]; then
        size=$(cat /sys/block/vda/size)
        echo "guest: disk vda $((size * 512)) bytes, sha256 $(sha256sum /dev/vda | cut -d' ' -f1)"
        yes "hyp dma pattern" | head -c 65536 >/tmp/pattern
        dd if=/tmp/pattern of=/dev/vda bs=65536 seek=16 count=1 conv=fsync 2>/dev/null &&
            echo "guest: disk pattern written at 1 MiB"
    else
        echo "guest: disk vda missing"
    fi
fi
echo "guest: done"
# The console's tty writes its last lines from the UART's TX interrupt; poweroff -f does not
# wait for that, so under load the last line could be lost with the VM. Let it drain.
sleep 0.3
poweroff -f
