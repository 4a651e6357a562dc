#!/usr/bin/env python3
"""Print what Native Client's x86-64 validator accepts, read from its own instruction definitions.

Usage: Scripts/nacl-def-facts.py DIR [--by-mnemonic]

DIR holds NaCl's `src/trusted/validator_ragel/instruction_definitions/*.def` (from the public
DaemonEngine/native_client repository; nothing of it is committed here). Every definition line
that exists in 64-bit mode (not `ia32`) is printed with NaCl's verdict on it:

  accept        the DFA accepts it (its CPUID features are in kValidatorCPUIDFeatures)
  forbidden     `nacl-forbidden` or `nacl-amd64-forbidden`
  unsupported   `nacl-unsupported`: the post-2015 validator refuses it and the loader rewrites it
                (non-temporal hints)
  disabled      `disabled_untested`: gen_dfa.py leaves it out of the validator (FMA4 and XOP)
  no-cpuid      a CPUID feature NaCl's validator never enabled (AES, CLMUL, BMI1, F16C, ...)

This is the derivation behind policies/nacl-2015.yaml: the policy names the same facts in
Sieve's selector language (extensions, mnemonics, operand sizes). The feature table below is
`kValidatorCPUIDFeatures` (validator_features_validator.c) with the derived macros of
validator_internal.h (LZCNT and TZCNT are TRUE unconditionally, NaCl issue 2869).
"""
import collections
import pathlib
import sys

ENABLED = {
    "3DNOW", "3DPRFTCH", "AVX", "AVX2", "CLFLUSH", "CMOV", "CMOVx87", "CX16", "CX8", "E3DNOW",
    "EMMX", "EMMXSSE", "AVX_Lis2", "FMA", "FMA4", "LAHF", "LZCNT", "TZCNT", "MMX", "MOVBE", "POPCNT", "SSE",
    "SSE2", "SSE3", "SSE41", "SSE42", "SSE4A", "SSSE3", "TSC", "x87", "XOP",
}


def definitions(path):
    """Yield (file, line number, name, operands, opcodes, attributes) per definition."""
    logical, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines() + [""], 1):
        line = raw.split("#", 1)[0].rstrip() if not raw.lstrip().startswith('"') else raw.rstrip()
        if line.startswith((" ", "\t")) and logical:
            logical += " " + line.strip()
            continue
        if logical:
            yield parse(path.name, start, logical)
        logical, start = line.strip(), number


def parse(file, number, text):
    name = ""
    if text.startswith('"'):
        end = text.index('"', 1)
        name, text = text[: end + 1], text[end + 1 :]
    columns = text.split(", ")
    if len(columns) < 2 or len(columns) > 3:
        sys.exit(f"{file}:{number}: cannot parse: {name}{text}")
    head = ([name] if name else []) + columns[0].split()
    attributes = columns[2].split() if len(columns) == 3 else []
    return file, number, head[0], head[1:], columns[1], attributes


def verdict(attributes):
    if "nacl-forbidden" in attributes or "nacl-amd64-forbidden" in attributes:
        return "forbidden"
    if "nacl-unsupported" in attributes:
        return "unsupported"
    if "disabled_untested" in attributes:
        return "disabled"
    missing = [a for a in attributes if a.startswith("CPUFeature_") and a[11:] not in ENABLED]
    return "no-cpuid" if missing else "accept"


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    folder = pathlib.Path(sys.argv[1])
    rows = []
    for path in sorted(folder.glob("*.def")):
        for file, number, name, operands, opcodes, attributes in definitions(path):
            if "ia32" in attributes:
                continue
            features = [a[11:] for a in attributes if a.startswith("CPUFeature_")]
            marks = [a for a in attributes if a.startswith("nacl-amd64-zero-extends")]
            rows.append((verdict(attributes), name, " ".join(operands), opcodes, ",".join(features),
                         " ".join(marks), f"{file}:{number}"))
    if "--by-mnemonic" in sys.argv:
        verdicts = collections.defaultdict(set)
        for row in rows:
            verdicts[row[1]].add(row[0])
        for name in sorted(verdicts):
            print(f"{name}\t{'/'.join(sorted(verdicts[name]))}")
        return
    for row in rows:
        print("\t".join(row))


if __name__ == "__main__":
    main()
