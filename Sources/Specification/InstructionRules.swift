import CZydis

/// One step of the abstract interpreter: the rules one instruction must obey given what is known
/// of the registers before it, and what is known after it.
struct InstructionRules {
    let insn: ZydisInstruction
    let before: RegisterFacts
    let bundleSize: Int
    let base: UInt64
    private(set) var violations: [Violation] = []
    /// The target of a direct jump or call, checked against the whole code by the caller.
    private(set) var directTarget: UInt64?

    init(insn: ZydisInstruction, before: RegisterFacts, bundleSize: Int, base: UInt64) {
        self.insn = insn
        self.before = before
        self.bundleSize = bundleSize
        self.base = base
    }

    mutating func refuse(_ rule: String, _ message: String) {
        violations.append(Violation(offset: insn.offset, rule: rule, message: "\(insn.name): \(message)"))
    }

    /// Checks the instruction and returns the register facts after it.
    mutating func apply() -> RegisterFacts {
        checkInstruction()
        for operand in insn.operands { checkOperand(operand) }
        checkControlFlow()
        return registersAfter()
    }

    // MARK: - State outside the program

    /// Whole-instruction rules: what no operand shows.
    mutating func checkInstruction() {
        // CPL0 instructions fault in user mode, but a sandbox must not depend on the kernel to say
        // no; HLT is NaCl's trap filler and only ever faults.
        if insn.has(sieve_spec_attribute_privileged), insn.mnemonic != ZYDIS_MNEMONIC_HLT {
            refuse("system.privileged", "a privileged instruction")
        }
        // The flags image beyond the arithmetic flags and DF (IF, TF, AC, IOPL, NT, RF, VM, ID...):
        // pushf/popf, cli/sti, int, iret. Zydis lists every flag an instruction touches.
        let outside = insn.raw.cpu_flags_accessed & ~sieve_spec_program_flags
        if outside != 0 {
            refuse("system.flags", "reads or writes system flags (mask 0x\(String(outside, radix: 16)))")
        }
        if let reason = Self.refusedMnemonics[insn.mnemonic.rawValue] { refuse("system.instruction", reason) }
        if let reason = Self.refusedCategories[insn.category.rawValue],
           !(insn.category == ZYDIS_CATEGORY_CET && (insn.mnemonic == ZYDIS_MNEMONIC_ENDBR64 || insn.mnemonic == ZYDIS_MNEMONIC_ENDBR32)) {
            refuse("system.category", "\(String(cString: sieve_spec_category_name(insn.category))): \(reason)")
        }
        // BT/BTS/BTR/BTC with a register bit offset address up to 2^60 bytes from the memory
        // operand Zydis reports, beyond any guard region (NaCl refuses them).
        let bitTests = [ZYDIS_MNEMONIC_BT, ZYDIS_MNEMONIC_BTS, ZYDIS_MNEMONIC_BTR, ZYDIS_MNEMONIC_BTC]
        let explicit = insn.explicitOperands
        if bitTests.contains(insn.mnemonic), explicit.count == 2, explicit[0].isMemory, explicit[1].isRegister {
            refuse("memory.bit-offset", "a register bit offset moves the address beyond the memory operand")
        }
    }

    /// Instructions whose escape no operand shows.
    static let refusedMnemonics: [ZydisMnemonic.RawValue: String] = [
        ZYDIS_MNEMONIC_RDPMC.rawValue: "reads performance counters",
        ZYDIS_MNEMONIC_SGDT.rawValue: "reads the GDT register (user mode without UMIP)",
        ZYDIS_MNEMONIC_SIDT.rawValue: "reads the IDT register (user mode without UMIP)",
        ZYDIS_MNEMONIC_SLDT.rawValue: "reads the LDT register (user mode without UMIP)",
        ZYDIS_MNEMONIC_STR.rawValue: "reads the task register (user mode without UMIP)",
        ZYDIS_MNEMONIC_SMSW.rawValue: "reads CR0's machine status word (user mode without UMIP)",
        ZYDIS_MNEMONIC_LAR.rawValue: "reads a descriptor table",
        ZYDIS_MNEMONIC_LSL.rawValue: "reads a descriptor table",
        ZYDIS_MNEMONIC_VERR.rawValue: "reads a descriptor table",
        ZYDIS_MNEMONIC_VERW.rawValue: "reads a descriptor table",
        // Zydis reports these addresses as plain register operands, not memory operands.
        ZYDIS_MNEMONIC_CLZERO.rawValue: "writes a cache line at the address in %rax",
        ZYDIS_MNEMONIC_ENQCMD.rawValue: "writes 64 bytes at the address in its register operand",
        ZYDIS_MNEMONIC_ENQCMDS.rawValue: "writes 64 bytes at the address in its register operand",
        ZYDIS_MNEMONIC_IRET.rawValue: "a far return from an interrupt",
        ZYDIS_MNEMONIC_IRETD.rawValue: "a far return from an interrupt",
        ZYDIS_MNEMONIC_IRETQ.rawValue: "a far return from an interrupt",
    ]

    /// Zydis categories that leave the program whatever their operands say.
    static let refusedCategories: [ZydisInstructionCategory.RawValue: String] = [
        ZYDIS_CATEGORY_INTERRUPT.rawValue: "enters the kernel through the IDT",
        ZYDIS_CATEGORY_SYSCALL.rawValue: "a system call",
        ZYDIS_CATEGORY_SYSRET.rawValue: "a return from a system call",
        ZYDIS_CATEGORY_RET.rawValue: "takes its target from memory, unchecked",
        ZYDIS_CATEGORY_IO.rawValue: "port I/O",
        ZYDIS_CATEGORY_IOSTRINGOP.rawValue: "port I/O",
        ZYDIS_CATEGORY_SGX.rawValue: "enters or leaves an enclave",
        ZYDIS_CATEGORY_VTX.rawValue: "talks to the hypervisor",
        ZYDIS_CATEGORY_RDWRFSGS.rawValue: "reads or writes the FS/GS base",
        ZYDIS_CATEGORY_PT.rawValue: "writes the processor trace",
        ZYDIS_CATEGORY_UINTR.rawValue: "user interrupts: state outside the program",
        ZYDIS_CATEGORY_KEYLOCKER.rawValue: "uses the platform's internal wrapping key",
        ZYDIS_CATEGORY_KEYLOCKER_WIDE.rawValue: "uses the platform's internal wrapping key",
        ZYDIS_CATEGORY_PADLOCK.rawValue: "VIA PadLock: memory blocks addressed by registers Zydis does not describe",
        ZYDIS_CATEGORY_RDPRU.rawValue: "reads processor performance registers",
        ZYDIS_CATEGORY_MPX.rawValue: "MPX bound tables live outside the sandbox",
        ZYDIS_CATEGORY_PCONFIG.rawValue: "platform configuration",
        ZYDIS_CATEGORY_HRESET.rawValue: "resets processor history",
        ZYDIS_CATEGORY_CET.rawValue: "the shadow-stack pointer is state outside the program",
    ]

    mutating func checkOperand(_ operand: sieve_spec_operand) {
        switch operand.type {
        case ZYDIS_OPERAND_TYPE_REGISTER: checkRegister(operand)
        case ZYDIS_OPERAND_TYPE_MEMORY: checkMemory(operand)
        case ZYDIS_OPERAND_TYPE_IMMEDIATE: break
        case ZYDIS_OPERAND_TYPE_POINTER: refuse("control.far", "a far pointer operand")
        default: refuse("unknown.operand", "operand type \(operand.type.rawValue) is unknown to the specification")
        }
    }

    /// Every register operand, explicit or not, read or written, must be program state.
    mutating func checkRegister(_ operand: sieve_spec_operand) {
        let name = GPR.name(operand.reg)
        switch operand.registerClass {
        case ZYDIS_REGCLASS_GPR8, ZYDIS_REGCLASS_GPR16, ZYDIS_REGCLASS_GPR32, ZYDIS_REGCLASS_GPR64,
             ZYDIS_REGCLASS_X87, ZYDIS_REGCLASS_MMX, ZYDIS_REGCLASS_XMM, ZYDIS_REGCLASS_YMM, ZYDIS_REGCLASS_ZMM,
             ZYDIS_REGCLASS_TMM, ZYDIS_REGCLASS_MASK:
            break  // the program's own registers (writes are judged in registersAfter)
        case ZYDIS_REGCLASS_FLAGS:
            break  // which flags: checkInstruction
        case ZYDIS_REGCLASS_IP:
            break  // reads are RIP-relative addressing and calls; writes: checkControlFlow
        case ZYDIS_REGCLASS_SEGMENT:
            refuse("system.register", "segment register \(name)")
        case ZYDIS_REGCLASS_TABLE:
            refuse("system.register", "descriptor-table register \(name)")
        case ZYDIS_REGCLASS_TEST, ZYDIS_REGCLASS_CONTROL, ZYDIS_REGCLASS_DEBUG:
            refuse("system.register", "system register \(name)")
        case ZYDIS_REGCLASS_BOUND:
            refuse("system.register", "MPX bound register \(name)")
        case ZYDIS_REGCLASS_INVALID:
            // Registers Zydis puts in no class: the x87 and SSE control/status words are the
            // program's; PKRU, UIF, BNDCFG, BNDSTATUS are not. XCR0 may be read (XGETBV, XSAVE):
            // like CPUID it describes the processor's enabled state, and only the kernel writes it.
            let program = [ZYDIS_REGISTER_X87CONTROL, ZYDIS_REGISTER_X87STATUS, ZYDIS_REGISTER_X87TAG, ZYDIS_REGISTER_MXCSR]
            let configuration = operand.reg == ZYDIS_REGISTER_XCR0 && operand.actions & UInt32(ZYDIS_OPERAND_ACTION_MASK_WRITE.rawValue) == 0
            if !program.contains(operand.reg) && !configuration { refuse("system.register", "register \(name) is state outside the program") }
        default:
            refuse("unknown.register-class", "register \(name) of class \(operand.registerClass.rawValue), unknown to the specification")
        }
    }

    // MARK: - Memory

    /// Every memory access stays in [%r15 - 40 GiB, %r15 + 4 GiB + 40 GiB): a 32-bit value, scaled by
    /// at most 8, plus a disp32, from %r15 or from a sandbox address, is at most 38 GiB away.
    mutating func checkMemory(_ operand: sieve_spec_operand) {
        switch operand.mem_type {
        case ZYDIS_MEMOP_TYPE_AGEN:
            return  // LEA computes an address and touches nothing
        case ZYDIS_MEMOP_TYPE_MEM:
            // Hints: the wide NOPs, the prefetches and CLDEMOTE never fault and never read architecturally.
            let hints = [ZYDIS_CATEGORY_WIDENOP, ZYDIS_CATEGORY_NOP, ZYDIS_CATEGORY_PREFETCH, ZYDIS_CATEGORY_PREFETCHWT1,
                         ZYDIS_CATEGORY_CLDEMOTE]
            if hints.contains(insn.category) { return }
        case ZYDIS_MEMOP_TYPE_MIB:
            refuse("memory.mib", "an MPX MIB operand (bound tables at addresses outside the sandbox)")
            return
        case ZYDIS_MEMOP_TYPE_VSIB:
            refuse("memory.vsib", "a VSIB gather or scatter: every vector lane is an unchecked 64-bit index")
            return
        default:
            refuse("unknown.memory-type", "memory operand type \(operand.mem_type.rawValue), unknown to the specification")
            return
        }
        // In 64-bit mode CS, DS, ES and SS have base 0; FS and GS have any base the OS chose.
        let flat = [ZYDIS_REGISTER_NONE, ZYDIS_REGISTER_CS, ZYDIS_REGISTER_DS, ZYDIS_REGISTER_ES, ZYDIS_REGISTER_SS]
        if !flat.contains(operand.mem_segment) {
            refuse("memory.segment", "segment \(GPR.name(operand.mem_segment)) has a base outside the program's control")
        }
        // 0x67 makes the address 32-bit: base and index are then not the registers judged below.
        if insn.raw.address_width != 64 {
            refuse("memory.address-size", "\(insn.raw.address_width)-bit addressing")
            return
        }
        // AMX tile loads and stores use the index as a row stride: 16 rows of a 32-bit stride reach
        // 64 GiB, beyond the guards.
        let tileRows = [ZYDIS_MNEMONIC_TILELOADD, ZYDIS_MNEMONIC_TILELOADDT1, ZYDIS_MNEMONIC_TILESTORED]
        if tileRows.contains(insn.mnemonic), operand.mem_index != ZYDIS_REGISTER_NONE {
            refuse("memory.tile-stride", "a tile stride register")
        }
        if operand.mem_base == ZYDIS_REGISTER_RIP || operand.mem_base == ZYDIS_REGISTER_EIP {
            return  // RIP-relative: inside the code, a disp32 away
        }
        if operand.mem_base == ZYDIS_REGISTER_NONE {
            refuse("memory.absolute", "an absolute address (no base register)")
            return
        }
        if operand.mem_index != ZYDIS_REGISTER_NONE {
            let index = GPR.number(operand.mem_index)
            if index == nil || !before[index!].isZeroExtended {
                refuse("memory.index", "index \(GPR.name(operand.mem_index)) was not zero-extended by the previous instruction")
            }
        }
        guard let base = GPR.number(operand.mem_base) else {
            refuse("memory.base", "base \(GPR.name(operand.mem_base)) is not a general-purpose register")
            return
        }
        if base == GPR.r15 { return }
        if !before[base].isSandboxAddress {
            refuse("memory.base", "base \(GPR.name(operand.mem_base)) does not hold a sandbox address")
        }
    }

    // MARK: - Control flow

    mutating func checkControlFlow() {
        if insn.raw.branch_type == ZYDIS_BRANCH_TYPE_FAR {
            refuse("control.far", "a far transfer")
            return
        }
        let writesIP = insn.operands.contains { $0.isRegister && $0.registerClass == ZYDIS_REGCLASS_IP && $0.writes }
        guard writesIP else { return }
        if let relative = insn.operands.first(where: { $0.isImmediate && $0.imm_is_relative != 0 }) {
            // Direct: the target is fixed; the caller checks it against the whole code.
            directTarget = base &+ UInt64(insn.end) &+ relative.imm
            return
        }
        // Indirect: only `and $-bundle,%eXX; add %r15,%rXX; jmp|call *%rXX`, whose register holds
        // a bundle start inside the sandbox (the code address made by the previous instruction).
        let explicit = insn.explicitOperands
        if insn.mnemonic == ZYDIS_MNEMONIC_JMP || insn.mnemonic == ZYDIS_MNEMONIC_CALL,
           explicit.count == 1, explicit[0].isRegister, explicit[0].registerClass == ZYDIS_REGCLASS_GPR64,
           let number = GPR.number(explicit[0].reg) {
            if before[number] != .codeAddress {
                refuse("control.indirect", "\(GPR.name(explicit[0].reg)) was not masked to a bundle and re-based on %r15 by the two previous instructions")
            }
            return
        }
        refuse("control.indirect", "a control transfer whose target is not checked (memory-indirect, return or system)")
    }

    // MARK: - Registers written

    /// The facts after the instruction. %r15 is never written; %rsp and %rbp hold sandbox
    /// addresses after every instruction, except a zero-extended value the very next instruction
    /// re-bases.
    mutating func registersAfter() -> RegisterFacts {
        var written: [Int: Fact] = [:]
        for operand in insn.operands where operand.isRegister && operand.writes {
            guard let number = GPR.number(operand.reg) else { continue }
            if number == GPR.r15 {
                refuse("r15.write", "writes \(GPR.name(operand.reg)), the sandbox base")
                continue
            }
            let fact = factWritten(operand, number)
            // Two operands writing one register (pop %rsp): only what both promise.
            if let previous = written[number], previous != fact { written[number] = .unknown } else { written[number] = fact }
        }
        var after = before
        for number in 0..<16 { after[number] = written[number] ?? before[number].aged }
        for sp in [GPR.rsp, GPR.rbp] {
            switch after[sp] {
            case .sandboxAddress, .codeAddress, .zeroExtended, .zeroExtendedAligned:
                break  // a zero-extended value must be re-based next: aging turns it unknown otherwise
            case .unknown:
                if written[sp] != nil {
                    refuse("stack.write", "\(GPR.name64(sp)) written other than by a stack instruction, a copy of a sandbox address, `and $-n`, or a 32-bit write re-based next")
                } else {
                    refuse("stack.pending", "\(GPR.name64(sp)) was zero-extended by the previous instruction and not re-based on %r15 here")
                }
                after[sp] = .sandboxAddress  // report once, not at every following instruction
            }
        }
        return after
    }

    /// What a write of `operand` (register `number`) leaves in the register.
    func factWritten(_ operand: sieve_spec_operand, _ number: Int) -> Fact {
        let explicit = insn.explicitOperands
        let isExplicit = operand.visibility == ZYDIS_OPERAND_VISIBILITY_EXPLICIT
        let cls = operand.registerClass
        if isExplicit, cls == ZYDIS_REGCLASS_GPR64, operand.writesAlways, isRebase(of: number) {
            // %r15 + a zero-extended value: a sandbox address; if the value was bundle-aligned, a
            // bundle start (code address). Re-basing anything else proves nothing.
            switch before[number] {
            case .zeroExtended: return .sandboxAddress
            case .zeroExtendedAligned: return .codeAddress
            case .unknown, .sandboxAddress, .codeAddress: return .unknown
            }
        }
        // mov %rsp,%rbp (and any 64-bit copy of a sandbox address).
        if isExplicit, cls == ZYDIS_REGCLASS_GPR64, operand.writesAlways, insn.mnemonic == ZYDIS_MNEMONIC_MOV,
           explicit.count == 2, explicit[1].isRegister, explicit[1].registerClass == ZYDIS_REGCLASS_GPR64,
           let source = GPR.number(explicit[1].reg), before[source].isSandboxAddress {
            return .sandboxAddress
        }
        // and $-n,%rsp with n < 128 (imm8): moves a sandbox address down by less than 128 bytes.
        if isExplicit, cls == ZYDIS_REGCLASS_GPR64, insn.mnemonic == ZYDIS_MNEMONIC_AND, explicit.count == 2,
           explicit[1].isImmediate, insn.raw.imm0_size == 8, Int64(bitPattern: explicit[1].imm) < 0,
           before[number].isSandboxAddress {
            return .sandboxAddress
        }
        // push, pop and call move %rsp by at most 8 and access memory at the new %rsp themselves:
        // a walk out of the sandbox hits a guard page first. (pushf, popf and ret move it the same
        // way; other rules refuse them.)
        let stackInstructions = [ZYDIS_MNEMONIC_PUSH, ZYDIS_MNEMONIC_POP, ZYDIS_MNEMONIC_CALL, ZYDIS_MNEMONIC_RET,
                                 ZYDIS_MNEMONIC_PUSHF, ZYDIS_MNEMONIC_PUSHFD, ZYDIS_MNEMONIC_PUSHFQ,
                                 ZYDIS_MNEMONIC_POPF, ZYDIS_MNEMONIC_POPFD, ZYDIS_MNEMONIC_POPFQ]
        if !isExplicit, number == GPR.rsp, stackInstructions.contains(insn.mnemonic),
           insn.operands.contains(where: { $0.isMemory && !($0.visibility == ZYDIS_OPERAND_VISIBILITY_EXPLICIT) && $0.mem_base == ZYDIS_REGISTER_RSP }) {
            return before[number].isSandboxAddress ? .sandboxAddress : .unknown
        }
        // An explicit 32-bit destination written on every execution zero-extends (AMD64 rule).
        // BSF/BSR leave the destination unchanged for a zero source on AMD, upper half included.
        if isExplicit, cls == ZYDIS_REGCLASS_GPR32, operand.writesAlways,
           insn.mnemonic != ZYDIS_MNEMONIC_BSF, insn.mnemonic != ZYDIS_MNEMONIC_BSR {
            // and $-32,%eXX: zero-extended and bundle-aligned, the first step of a masked jump.
            if insn.mnemonic == ZYDIS_MNEMONIC_AND, explicit.count == 2, explicit[1].isImmediate,
               explicit[1].imm & UInt64(bundleSize - 1) == 0 {
                return .zeroExtendedAligned
            }
            return .zeroExtended
        }
        return .unknown
    }

    /// `add %r15,%rX`, `lea (%rX,%r15,1),%rX` / `lea (%r15,%rX,1),%rX`, or `or %r15,%rX`: the
    /// sandbox base is 4 GiB-aligned (its low 32 bits are zero), so OR of a zero-extended value adds
    /// it (NaCl issue 3070).
    func isRebase(of number: Int) -> Bool {
        let explicit = insn.explicitOperands
        guard explicit.count == 2, explicit[0].isRegister, GPR.number(explicit[0].reg) == number,
              explicit[0].registerClass == ZYDIS_REGCLASS_GPR64 else { return false }
        let source = explicit[1]
        if insn.mnemonic == ZYDIS_MNEMONIC_ADD || insn.mnemonic == ZYDIS_MNEMONIC_OR {
            return source.isRegister && source.reg == ZYDIS_REGISTER_R15
        }
        if insn.mnemonic == ZYDIS_MNEMONIC_LEA, source.isMemory, insn.raw.address_width == 64,
           source.mem_scale <= 1, source.mem_displacement == 0,
           source.mem_base != ZYDIS_REGISTER_NONE, source.mem_index != ZYDIS_REGISTER_NONE {
            let pair = [GPR.number(source.mem_base), GPR.number(source.mem_index)]
            return pair == [number, GPR.r15] || pair == [GPR.r15, number]
        }
        return false
    }
}
