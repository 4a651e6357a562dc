#!/usr/bin/env python3
"""Cross-check Sieve's decoder against iced-x86, form by form.

    Scripts/crosscheck-iced.py [--sieve PATH] [--seed N] [--per-form N] [FILE...]

With no FILE, builds a corpus of mutated encodings from the database's samples (prefixes
inserted, bytes flipped, random ModRM/SIB/tails, random buffers), one per 32-byte slot
padded with NOPs so that a linear sweep re-synchronises at every slot. FILE arguments are
read as raw code instead. `sieve disasm --raw --format jsonl` lists the code; iced-x86
decodes at every offset Sieve lists; the two must agree on validity, length and form (Sieve's
form ids are iced's Code names). Refused encodings count as valid, as iced decodes them.
Exits 1 when they disagree anywhere, printing the disagreements grouped by kind.
"""
import argparse
import collections
import json
import os
import random
import subprocess
import sys
import tempfile

import iced_x86 as iced

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CODE_NAMES = {v: k.lower() for k, v in vars(iced.Code).items() if not k.startswith("_") and isinstance(v, int)}
PREFIXES = [0x66, 0x67, 0xF2, 0xF3, 0xF0, 0x2E, 0x3E, 0x26, 0x36, 0x64, 0x65] + list(range(0x40, 0x50))


def samples():
    path = os.path.join(ROOT, "Sources/X86/Database/x86-64.isa")
    for line in open(path):
        if line.startswith("#") or not line.strip():
            continue
        yield bytes.fromhex(line.split()[14])


def mutations(sample, rng, count):
    for _ in range(count):
        b = bytearray(sample)
        kind = rng.randrange(6)
        if kind == 0:
            b[0:0] = bytes(rng.choice(PREFIXES) for _ in range(rng.randint(1, 3)))
        elif kind == 1:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif kind == 2:
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif kind == 3:
            b += bytes(rng.randrange(256) for _ in range(rng.randint(1, 6)))
            b[min(len(b) - 1, len(sample) - 1)] = rng.randrange(256)
        elif kind == 4:
            b[0:0] = bytes([rng.choice(PREFIXES)])
            b[rng.randrange(len(b))] = rng.randrange(256)
        else:
            b = bytearray(rng.randrange(256) for _ in range(rng.randint(1, 15)))
        yield bytes(b[:15])


def corpus(seed, per_form):
    rng = random.Random(seed)
    out = bytearray()
    for sample in samples():
        for candidate in [sample] + list(mutations(sample, rng, per_form)):
            out += candidate + b"\x90" * (32 - len(candidate))
    return bytes(out)


def compare(code, sieve):
    with tempfile.NamedTemporaryFile(suffix=".bin") as f:
        f.write(code)
        f.flush()
        listing = subprocess.run([sieve, "disasm", "--raw", "--format", "jsonl", f.name],
                                 check=True, capture_output=True, text=True).stdout
    decoder = iced.Decoder(64, code)
    agree, kinds = 0, collections.defaultdict(list)
    for line in listing.splitlines():
        record = json.loads(line)
        offset = record["offset"]
        decoder.position = offset
        decoder.ip = offset
        instr = decoder.decode()
        iced_valid = instr.code != iced.Code.INVALID
        ours_valid = not record.get("invalid", False)
        window = code[offset:offset + 15].hex()
        if iced_valid != ours_valid:
            key = ("iced-only" if iced_valid else "sieve-only",
                   CODE_NAMES[instr.code] if iced_valid else record["form"])
        elif iced_valid and (instr.len != record["length"] or CODE_NAMES[instr.code] != record["form"]):
            key = ("differ", f"{record['form']}/{record['length']} vs {CODE_NAMES[instr.code]}/{instr.len}")
        else:
            agree += 1
            continue
        kinds[key].append(window)
    return agree, kinds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sieve", default=os.path.join(ROOT, ".build/release/sieve"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--per-form", type=int, default=20)
    parser.add_argument("--show", type=int, default=40)
    parser.add_argument("files", nargs="*")
    args = parser.parse_args()
    inputs = [(f, open(f, "rb").read()) for f in args.files] or [("mutated samples", corpus(args.seed, args.per_form))]
    total_bad = 0
    for name, code in inputs:
        agree, kinds = compare(code, args.sieve)
        bad = sum(len(v) for v in kinds.values())
        total_bad += bad
        print(f"{name}: {agree} agree, {bad} disagree ({100.0 * agree / max(1, agree + bad):.4f}%)")
        for (kind, what), windows in sorted(kinds.items(), key=lambda kv: -len(kv[1]))[:args.show]:
            print(f"  {len(windows):6d} {kind:10s} {what:60s} e.g. {windows[0]}")
    sys.exit(1 if total_bad else 0)


if __name__ == "__main__":
    main()
