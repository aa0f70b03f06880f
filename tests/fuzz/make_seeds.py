#!/usr/bin/env python3
# Writes the hand-made seed inputs of the fuzz targets into tests/fuzz/corpus/<target>/ (seeds found by fuzzing are added next to them as files named crash-*/regress-*).
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def put(target, name, data):
    folder = os.path.join(CORPUS, target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


# ---- ELF ---------------------------------------------------------------------

def elf(code=b"\x90" * 15 + b"\xc3", with_symbols=False, paddr=0x100000, entry=None):
    ehdr_size, phdr_size, shdr_size = 64, 56, 64
    code_offset = ehdr_size + phdr_size
    entry = paddr if entry is None else entry
    body = bytearray(code)
    shoff = shnum = shstrndx = 0
    if with_symbols:
        strtab = b"\0_start\0helper\0"
        syms = bytearray(24)  # the null symbol
        for name_offset, value, size in ((1, paddr, 8), (8, paddr + 8, 8)):
            # st_name, st_info (GLOBAL FUNC), st_other, st_shndx, st_value, st_size
            syms += struct.pack("<IBBHQQ", name_offset, 0x12, 0, 1, value, size)
        strtab_offset = code_offset + len(body)
        body += strtab
        while (code_offset + len(body)) % 8:
            body += b"\0"
        symtab_offset = code_offset + len(body)
        body += syms
        shoff = code_offset + len(body)
        sections = [
            b"\0" * shdr_size,
            # name, type SYMTAB(2), flags, addr, offset, size, link, info, align, entsize
            struct.pack("<IIQQQQIIQQ", 0, 2, 0, 0, symtab_offset, len(syms), 2, 1, 8, 24),
            # STRTAB(3)
            struct.pack("<IIQQQQIIQQ", 0, 3, 0, 0, strtab_offset, len(strtab), 0, 0, 1, 0),
        ]
        body += b"".join(sections)
        shnum = len(sections)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
    ehdr = ident + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, entry, ehdr_size, shoff, 0,
                               ehdr_size, phdr_size, 1, shdr_size, shnum, shstrndx)
    # PT_LOAD, flags R|X, offset, vaddr, paddr, filesz, memsz, align
    phdr = struct.pack("<IIQQQQQQ", 1, 5, code_offset, paddr, paddr, len(code),
                       len(code) + 4096, 0x1000)
    return ehdr + phdr + bytes(body)


def elf_seeds():
    put("elf_loader", "minimal", elf())
    put("elf_loader", "symbols", elf(with_symbols=True))
    put("elf_loader", "entry-outside", elf(entry=0x200000))
    put("elf_loader", "below-image-min", elf(paddr=0x1000))
    put("elf_loader", "header-only", elf()[:64])
    put("elf_loader", "not-elf", b"#!/bin/sh\necho hello\n")


# ---- ring backend ------------------------------------------------------------

def ring_input(script, flags=3, order=2, ring_page=4, pages=0, start=0xfffffff0,
               capacity=2048, memory=b""):
    return (struct.pack("<BBHHIIH", flags, order - 1, ring_page, pages, start, capacity,
                        len(script)) + bytes(script) + memory)


def plausible(op, segments=1, sector=8, sector_count=0, shapes=()):
    out = [7, op, segments, 0] + list(struct.pack("<H", sector)) + list(struct.pack("<H", sector_count))
    for i in range(min(segments, 16)):
        shape = shapes[i] if i < len(shapes) else 0
        out += [shape] + list(struct.pack("<H", 0x40 + 8 * i))
    return out


def ring_seeds():
    serve_publish = [2, 0xff, 0, 4]
    put("ring_backend", "read-write-flush",
        ring_input(plausible(0) + plausible(1, segments=2) + [7, 2, 0, 0, 0, 0, 0, 0] +
                   serve_publish + [5]))
    put("ring_backend", "info-discard-zeroes",
        ring_input(plausible(5) + plausible(3, segments=0, sector_count=16) +
                   plausible(4, segments=0, sector_count=4000) + serve_publish))
    put("ring_backend", "hostile-indices",
        ring_input(plausible(0) + [2, 0x00, 1] + [0, 40] + [2, 0xff, 0] + [1, 0xff, 0xff, 0xff, 0x7f] +
                   [2, 0xff, 0] + [8] + serve_publish))
    put("ring_backend", "restored-and-scribbled",
        ring_input(plausible(0) + [9, 1] + [6, 0x0c, 0x00, 0x05] + [8] + plausible(1) +
                   serve_publish + [3, 4], flags=3 | 8))
    put("ring_backend", "bad-header", ring_input([8, 2, 0xff, 0], flags=0))
    put("ring_backend", "unaligned", ring_input([2, 0xff, 0], flags=3 | 16))


# ---- ATA -----------------------------------------------------------------------

def ata_command(command_pick, count, lba, lba48=False, lba_mode=True, feature=0):
    shape = (command_pick << 3) | (1 if lba48 else 0) | (2 if lba_mode else 0) | 4
    out = [5, shape]
    if lba48:
        out += [0, 0]
    out += [0, count, lba & 0xff, (lba >> 8) & 0xff, feature]
    return out


def ata_seeds():
    # Indices into fuzz_ata.c's interesting_commands.
    READ, READ_EXT, READ_MULT, WRITE, WRITE_MULT, SET_MULT, FLUSH, IDENTIFY = 0, 1, 2, 4, 6, 10, 11, 12
    string_read = [2, 0x00, 0x10]       # 4096 bytes
    string_write = [3, 0x00, 0x04]      # 1024 bytes
    put("ata", "identify", bytes([0] + ata_command(IDENTIFY, 0, 0) + [7, 0xff, 7, 0x01]))
    put("ata", "read-write", bytes([0] + ata_command(READ, 8, 3) + string_read +
                                   ata_command(WRITE, 2, 290) + string_write +
                                   ata_command(FLUSH, 0, 0)))
    put("ata", "multiple-lba48", bytes([0] + ata_command(SET_MULT, 16, 0) +
                                       ata_command(READ_MULT, 0, 1, lba48=False) +
                                       [2, 0xff, 0xff] + ata_command(READ_EXT, 3, 297, lba48=True) +
                                       string_read + ata_command(WRITE_MULT, 20, 5) + string_write +
                                       [6]))
    put("ata", "readonly-and-limited", bytes([1 | 2, 3, 1] + ata_command(WRITE, 1, 0) + [4, 0x10, 0x00] +
                                             ata_command(READ, 4, 0) + [1, 7, 4, 0xff, 0xff] +
                                             string_read))
    put("ata", "chs-and-reset", bytes([8] + ata_command(READ, 2, 1, lba_mode=False) + [0, 0x08, 0x04, 0, 0, 0] +
                                      [2, 0x00, 0x04] + [6]))
    # A restored read in progress: 16 state bytes, then the numbers.
    state = bytes([0, 4, 0, 0, 0, 0, 0x40, 0x58, 0, 0, 0, 0x20, 1, 0, 1, 0])
    numbers = struct.pack("<IHHHBHHIII", 0, 10, 4, 4, 1, 512, 10, 2048, 0, 0)
    put("ata", "restored-read", bytes([4]) + state + numbers + struct.pack("<H", 16) + b"\xab" * 16 +
        bytes(string_read))


# ---- config XML ----------------------------------------------------------------

def xml_seeds():
    root = os.path.dirname(os.path.dirname(HERE))
    for name in ("hello.xml", "disk-pv.xml", "disk-ata.xml"):
        with open(os.path.join(root, "examples", name), "rb") as f:
            put("config_xml", name.replace(".xml", ""), f.read())
    put("config_xml", "entity-file",
        b"<?xml version='1.0'?><!DOCTYPE d [<!ENTITY e SYSTEM '/dev/zero'>]>"
        b"<domain type='kvm'><name>&e;</name></domain>")
    put("config_xml", "entity-expansion",
        b"<!DOCTYPE d [<!ENTITY a 'aaaaaaaaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;&a;&a;&a;&a;'>"
        b"<!ENTITY c '&b;&b;&b;&b;&b;&b;&b;&b;'><!ENTITY d '&c;&c;&c;&c;&c;&c;&c;&c;'>]>"
        b"<domain type='kvm'><name>&d;</name><memory>&d;</memory></domain>")
    put("config_xml", "not-xml", b"<domain type='kvm'><name>x</name")
    put("config_xml", "memory-units",
        b"<domain type='kvm'><name>m</name><memory unit='GiB'>18446744073709551615</memory>"
        b"<os><kernel>k.elf</kernel></os></domain>")


# ---- state stream ----------------------------------------------------------------

def state_record(pick, payload, mandatory=True):
    return bytes([pick, 1 if mandatory else 0]) + struct.pack("<H", len(payload)) + payload


def state_seeds():
    CONFIG, NOTE, ATA, UNKNOWN = 4, 7, 16, 17
    config = (b"name=seed\nuuid=000102030405060708090a0b0c0d0e0f\nmemory_bytes=67108864\n"
              b"vcpus=1\nkernel=/k%20k.elf\ncmdline=a%3Db\nlifecycle=0 1 0\nconsole_mode=0\n"
              b"disk=/tmp/d.img\ndisk_options=0 1 0 1 50\ndisk_limits=1 2 3 4\n")
    # mode 1 = built, kind STATE (bits 1-2 = 0); the begin-kind byte follows.
    put("state", "config", bytes([1, 0]) + state_record(CONFIG, config) +
        state_record(NOTE, b"saved by the seed", False) + state_record(ATA, bytes(160)) +
        state_record(UNKNOWN, b"optional", False))
    put("state", "unknown-mandatory", bytes([1, 0]) + state_record(UNKNOWN, b"x"))
    put("state", "no-end", bytes([1, 0]) + state_record(CONFIG, b"kernel=k") +
        state_record(NOTE | 0x20, b"", False))
    put("state", "raw-garbage", bytes([0]) + b"KAPSELST" + bytes(40))


# ---- control socket JSON requests -------------------------------------------------

def control_json_seeds():
    put("control_json", "info", b'{"version":1,"verb":"info","id":7}')
    put("control_json", "set-limits",
        b'{"version":1,"verb":"set-limits","args":{"disk":0,"iops":500,"readonly":true,'
        b'"dir":"/tmp/a b/\\u00e9"},"id":"x"}')
    put("control_json", "malformed", b'{"version":1,"verb":"info"')
    put("control_json", "bad-types", b'{"version":"1","verb":7,"args":[1],"id":{}}')
    put("control_json", "stats-text",
        b"vm web: uptime_ns 5000\n  exits_total: 12\ndevice 0 console:\n  exits: 3\n"
        b"device 1 block-pv0:\n  latency_us_histogram: [0,2):1\n")


def main():
    elf_seeds()
    ring_seeds()
    ata_seeds()
    xml_seeds()
    state_seeds()
    control_json_seeds()
    return 0


if __name__ == "__main__":
    sys.exit(main())
