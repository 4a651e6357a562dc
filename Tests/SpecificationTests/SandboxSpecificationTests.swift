import Testing
import Specification

/// Hex, spaces ignored, padded with NOPs to a whole 32-byte bundle.
func bundle(_ hex: String, size: Int = 32) -> [UInt8] {
    var bytes = bytes(hex)
    while bytes.count % size != 0 || bytes.isEmpty { bytes.append(0x90) }
    return bytes
}

func bytes(_ hex: String) -> [UInt8] {
    let digits = Array(hex.filter { !$0.isWhitespace })
    return stride(from: 0, to: digits.count, by: 2).map { UInt8(String(digits[$0...$0 + 1]), radix: 16)! }
}

struct SpecCase: CustomStringConvertible, Sendable {
    let title: String
    let hex: String
    var description: String { title }
    init(_ title: String, _ hex: String) { self.title = title; self.hex = hex }
}

@Suite struct SandboxSpecificationTests {
    static let spec = SandboxSpecification()

    /// NaCl's sanctioned sequences and ordinary sandboxed code: no violation.
    static let accepted: [SpecCase] = [
        SpecCase("mov %eax,%eax; mov (%r15,%rax,1),%ecx", "89 c0  41 8b 0c 07"),
        SpecCase("zero-extension by any 32-bit write: add %ebx,%eax; mov (%r15,%rax,8),%ecx", "01 d8  41 8b 0c c7"),
        SpecCase("r8-r14 index: mov %r9d,%r9d; mov (%r15,%r9,4),%eax", "45 89 c9  43 8b 04 8f"),
        SpecCase("masked jump: and $-32,%eax; add %r15,%rax; jmp *%rax", "83 e0 e0  4c 01 f8  ff e0"),
        SpecCase("masked call through %r11", "41 83 e3 e0  4d 01 fb  41 ff d3"),
        SpecCase("mov %eax,%esp; add %r15,%rsp", "89 c4  4c 01 fc"),
        SpecCase("mov %esp,%esp; or %r15,%rsp (NaCl issue 3070: %r15 is 4 GiB-aligned)", "89 e4  4c 09 fc  89 e4  49 0b e7"),
        SpecCase("mov %ecx,%ebp; lea (%rbp,%r15,1),%rbp", "89 cd  4a 8d 6c 3d 00"),
        SpecCase("mov %rsp,%rbp; and $-16,%rsp; mov %rbp,%rsp", "48 89 e5  48 83 e4 f0  48 89 ec"),
        SpecCase("push, pop, push memory, pop memory", "50  41 5b  ff 34 24  8f 45 08"),
        SpecCase("call to the next bundle", "e8 1b 00 00 00"),
        SpecCase("jcc backwards to a bundle start outside the code", "0f 84 da ff ff ff"),
        SpecCase("rip-relative load and store", "48 8b 05 00 01 00 00  89 0d f0 ff ff ff"),
        SpecCase("stack accesses", "8b 04 24  8b 45 08  48 89 44 24 f8  8b 84 24 00 00 00 80"),
        SpecCase("%rsp base with a zero-extended index", "89 c0  8b 04 84"),
        SpecCase("%r15 base, disp32", "41 8b 87 ff ff ff 7f"),
        SpecCase("string sequence", "89 f6  49 8d 34 37  89 ff  49 8d 3c 3f  a4"),
        SpecCase("rep stos sequence", "89 ff  49 8d 3c 3f  f3 48 ab"),
        SpecCase("lea computes, accesses nothing", "48 8d 04 08  67 8d 04 08"),
        SpecCase("hints: nop (%rax), prefetchnta (%rax)", "0f 1f 00  0f 18 00"),
        SpecCase("hlt, rdtsc, cpuid, cld, std, lfence", "f4  0f 31  0f a2  fc  fd  0f ae e8"),
        SpecCase("x87 and SSE state", "d9 3c 24  0f ae 1c 24  db e3  df e0"),
        SpecCase("bt with an immediate bit offset", "41 0f ba 27 05"),
        SpecCase("a jump to an instruction start outside any sequence", "eb 02  89 c0  90"),
        SpecCase("cs and ds overrides are flat in 64-bit mode", "2e 8b 04 24  3e 8b 04 24"),
    ]

    @Test(arguments: accepted)
    func sanctionedSequencesAreAccepted(_ c: SpecCase) {
        var code = bytes(c.hex)
        if c.title.hasPrefix("call to the next bundle") || c.title.hasPrefix("a jump") { code = bundle(c.hex, size: 64) } else { code = bundle(c.hex) }
        let found = Self.spec.violations(code)
        #expect(found.isEmpty, "\(found)")
    }

    /// Escapes: each gives exactly the named rule (several only where two rules see one escape).
    static let escapes: [(SpecCase, Set<String>)] = [
        (SpecCase("moffs store", "48 a3 00 00 00 00 01 00 00 00"), ["memory.absolute"]),
        (SpecCase("SIB without base", "8b 04 25 00 00 00 00"), ["memory.absolute"]),
        (SpecCase("sgdt (%r15)", "41 0f 01 07"), ["system.instruction", "system.register"]),
        (SpecCase("sidt (%r15)", "41 0f 01 0f"), ["system.instruction", "system.register"]),
        (SpecCase("sldt %eax", "0f 00 c0"), ["system.instruction", "system.register"]),
        (SpecCase("smsw %eax", "0f 01 e0"), ["system.instruction", "system.register"]),
        (SpecCase("mov %fs,%eax", "8c e0"), ["system.register"]),
        (SpecCase("mov %eax,%ss", "8e d0"), ["system.register"]),
        (SpecCase("push %fs", "0f a0"), ["system.register"]),
        (SpecCase("push %gs", "0f a8"), ["system.register"]),
        (SpecCase("pushf", "9c"), ["system.flags"]),
        (SpecCase("popf", "9d"), ["system.flags"]),
        (SpecCase("cli (IOPL-sensitive, not CPL0 for Zydis)", "fa"), ["system.flags"]),
        (SpecCase("invd", "0f 08"), ["system.privileged"]),
        (SpecCase("wbinvd", "0f 09"), ["system.privileged"]),
        (SpecCase("rdpmc", "0f 33"), ["system.instruction"]),
        (SpecCase("wrpkru", "0f 01 ef"), ["system.register"]),
        (SpecCase("wrfsbase %rax", "f3 48 0f ae d0"), ["system.category"]),
        (SpecCase("lsl %eax,%eax", "0f 03 c0"), ["system.instruction"]),
        (SpecCase("mov %cr0,%rax", "0f 20 c0"), ["system.privileged", "system.register"]),
        (SpecCase("mov (%rax),%ecx", "8b 08"), ["memory.base"]),
        (SpecCase("index not zero-extended", "41 8b 0c 07"), ["memory.index"]),
        (SpecCase("zero-extension one instruction too early", "89 c0  90  41 8b 0c 07"), ["memory.index"]),
        (SpecCase("8-bit write does not zero-extend", "88 c0  41 8b 0c 07"), ["memory.index"]),
        (SpecCase("cmov does not always write", "0f 44 c1  41 8b 0c 07"), ["memory.index"]),
        (SpecCase("unmasked jmp *%rax", "ff e0"), ["control.indirect"]),
        (SpecCase("masked, not re-based", "83 e0 e0  ff e0"), ["control.indirect"]),
        (SpecCase("jmp *(%r15)", "41 ff 27"), ["control.indirect"]),
        (SpecCase("ret", "c3"), ["system.category", "control.indirect"]),
        (SpecCase("far jmp", "41 ff 2f"), ["control.far"]),
        (SpecCase("syscall", "0f 05"), ["system.category", "system.register", "system.flags", "control.indirect"]),
        (SpecCase("int $0x80", "cd 80"), ["system.category", "system.flags", "control.indirect"]),
        (SpecCase("xor %r15,%r15", "4d 31 ff"), ["r15.write"]),
        (SpecCase("mov $0,%r15d", "41 bf 00 00 00 00"), ["r15.write"]),
        (SpecCase("pop %r15", "41 5f"), ["r15.write"]),
        (SpecCase("mov %al,%r15b", "41 88 c7"), ["r15.write"]),
        (SpecCase("lea (%rax),%rsp", "48 8d 20"), ["stack.write"]),
        (SpecCase("sub $8,%rsp", "48 83 ec 08"), ["stack.write"]),
        (SpecCase("pop %rsp", "5c"), ["stack.write"]),
        (SpecCase("pop %rbp", "5d"), ["stack.write"]),
        (SpecCase("leave", "c9"), ["stack.write"]),
        (SpecCase("enter", "c8 08 00 00"), ["stack.write"]),
        (SpecCase("xchg %rax,%rsp", "48 94"), ["stack.write"]),
        (SpecCase("mov %eax,%esp, not re-based", "89 c4  90"), ["stack.pending"]),
        (SpecCase("fs override", "64 41 8b 07"), ["memory.segment"]),
        (SpecCase("0x67", "67 41 8b 07"), ["memory.address-size"]),
        (SpecCase("vpgatherdd", "c4 e2 69 90 04 88"), ["memory.vsib"]),
        (SpecCase("bt %eax,(%r15)", "41 0f a3 07"), ["memory.bit-offset"]),
        (SpecCase("movsb without the sequence", "a4"), ["memory.base"]),
        (SpecCase("xlat", "d7"), ["memory.base"]),
        (SpecCase("bndstx", "41 0f 1b 04 07"), ["memory.mib", "system.register", "system.category"]),
        (SpecCase("undecodable: push %es is invalid in 64-bit mode", "06"), ["decode"]),
    ]

    @Test(arguments: escapes.map { $0.0 })
    func escapesAreViolations(_ c: SpecCase) {
        let expected = Self.escapes.first { $0.0.title == c.title }!.1
        let found = Self.spec.violations(bundle(c.hex))
        #expect(Set(found.map(\.rule)) == expected, "\(found)")
    }

    @Test func jumpIntoTheMiddleOfSanctionedSequences() {
        // jmp to the use of a zero-extended index, skipping the zero-extension
        let intoUse = Self.spec.violations(bundle("eb 02  89 c0  41 8b 0c 07"))
        #expect(intoUse.map(\.rule) == ["control.into-sequence", "memory.index"] || intoUse.map(\.rule) == ["control.into-sequence"], "\(intoUse)")
        // jmp to add %r15,%rsp, skipping the 32-bit write
        let intoRebase = Self.spec.violations(bundle("eb 02  89 c4  4c 01 fc"))
        #expect(intoRebase.map(\.rule) == ["control.into-sequence"], "\(intoRebase)")
        // jmp to the jmp of a masked jump
        let intoMask = Self.spec.violations(bundle("eb 06  83 e0 e0  4c 01 f8  ff e0"))
        #expect(intoMask.map(\.rule) == ["control.into-sequence"], "\(intoMask)")
        // jmp to movsb, after %rsi's sandboxing
        let intoString = Self.spec.violations(bundle("eb 0c  89 f6  49 8d 34 37  89 ff  49 8d 3c 3f  a4"))
        #expect(intoString.map(\.rule) == ["control.into-sequence"], "\(intoString)")
        // a jump into the middle of an instruction
        let intoBytes = Self.spec.violations(bundle("eb 01  89 c0"))
        #expect(intoBytes.map(\.rule) == ["control.target"], "\(intoBytes)")
    }

    @Test func layout() {
        // a 5-byte instruction at offset 30 crosses the boundary
        let crossing = Self.spec.violations(bundle(String(repeating: "90 ", count: 30) + "b8 90 90 90 90", size: 64))
        #expect(crossing.map(\.rule) == ["layout.crossing"], "\(crossing)")
        #expect(Self.spec.violations(bundle("90"), base: 16).map(\.rule).contains("layout.base"))
        #expect(Self.spec.violations(bytes("90 90")).map(\.rule) == ["layout.end"])
        // %rsp pending at the bundle end
        let pending = Self.spec.violations(bytes(String(repeating: "90 ", count: 30) + "89 c4"))
        #expect(pending.map(\.rule) == ["stack.bundle-end"], "\(pending)")
        // a direct jump out of the code to an unaligned address
        #expect(Self.spec.violations(bundle("e9 00 01 00 00")).map(\.rule) == ["control.target"])
        // bundle size is a parameter: 16-byte bundles move the crossing
        let small = SandboxSpecification(bundleSize: 16)
        #expect(small.violations(bundle(String(repeating: "90 ", count: 14) + "89 c0 90")).isEmpty)
        #expect(small.violations(bundle(String(repeating: "90 ", count: 15) + "b8 90 90 90 90")).map(\.rule) == ["layout.crossing"])
    }
}
