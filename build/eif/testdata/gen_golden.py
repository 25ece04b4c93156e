#!/usr/bin/env python3
# Writes golden_v4.eif and golden_v4_signed_arm64.eif for golden_test.go.
#
# An encoder written from the published format description only
# (aws/aws-nitro-enclaves-image-format README.md, "Enclave Image File (EIF)
# Specification": 548-byte big-endian EifHeader, 12-byte EifSectionHeader,
# eif_crc32 = CRC-32 over every byte of the file except that field), using
# Python's struct, zlib.crc32 and hashlib, so that nothing in it shares code
# with build/eif. Run it from this directory; it prints the expected PCRs
# (PCRx = SHA-384(48 zero bytes || SHA-384(content))).
import hashlib
import struct
import zlib

def eif(flags, mem, cpus, sections):
    n = len(sections)
    offs, sizes, off = [], [], 548
    for _, d in sections:
        offs.append(off)
        sizes.append(len(d))
        off += 12 + len(d)
    offs += [0] * (32 - n)
    sizes += [0] * (32 - n)
    hdr = struct.pack('>4sHHQQHH', b'.eif', 4, flags, mem, cpus, 0, n)
    hdr += struct.pack('>32Q', *offs) + struct.pack('>32Q', *sizes) + struct.pack('>I', 0)
    assert len(hdr) == 544
    body = b''.join(struct.pack('>HHQ', t, 0, len(d)) + d for t, d in sections)
    crc = zlib.crc32(hdr + body) & 0xffffffff
    return hdr + struct.pack('>I', crc) + body, crc

def pcr(data):
    return hashlib.sha384(b'\0' * 48 + hashlib.sha384(data).digest()).hexdigest()

KERNEL, CMDLINE, META = b'KERNEL', b'console=ttyS0', b'{"ImageName":"golden"}'
RAMDISKS = [b'boot', b'app1', b'app22']
SIG, CERT = b'SIGNATURE', b'CERT-DER'

# kernel=1 cmdline=2 ramdisk=3 signature=4 metadata=5, in nitro-cli's order.
b, crc = eif(0, 1 << 30, 2, [(1, KERNEL), (2, CMDLINE), (5, META)] + [(3, r) for r in RAMDISKS])
open('golden_v4.eif', 'wb').write(b)
print('golden_v4.eif crc %08x' % crc)
print('PCR0', pcr(KERNEL + CMDLINE + b''.join(RAMDISKS)))
print('PCR1', pcr(KERNEL + CMDLINE + RAMDISKS[0]))
print('PCR2', pcr(b''.join(RAMDISKS[1:])))

b, crc = eif(1, 512 << 20, 4, [(1, KERNEL), (2, CMDLINE), (5, META), (3, RAMDISKS[0]), (4, SIG)])
open('golden_v4_signed_arm64.eif', 'wb').write(b)
print('golden_v4_signed_arm64.eif crc %08x' % crc)
print('PCR0', pcr(KERNEL + CMDLINE + RAMDISKS[0]))
print('PCR2', pcr(b''))
print('PCR8', pcr(CERT))
