import X86

/// NaCl's x86-64 sandbox model as a table compiler (DESIGN §8): every operand of every form,
/// explicit or implicit, register or memory, data or control, and every attribute of the form,
/// is classified by an exhaustive `switch` (no `default:`) into the rule that makes it safe. A
/// form with anything that no rule covers is refused whatever the policy trusts, with the
/// reason: a new operand kind, register file or attribute forces a decision here instead of
/// slipping through. The C core reads the result (`FormPlan`); it restates none of it.
public enum NaClModel {
    /// What the model concluded about one form.
    public struct Classification: Sendable, Equatable {
        /// Why the model refuses every instance, and as which kind of finding (nil: the
        /// instance rules of the core decide).
        public var refusal: Refusal?
        public var facts: CompiledPolicy.ModelFacts = []
        /// General registers written at an encoded place, as `FormPlan.WriteSlot` values: the
        /// core checks each instance for %r15, %rsp and %rbp.
        public var writes: [UInt8] = []
        /// A string or MASKMOV operand addressed through %rsi/%rdi (0x67 would truncate it).
        public var implicitMemory = false

        mutating func refuse(_ kind: FindingKind, _ reason: String) {
            if refusal == nil { refusal = Refusal(kind: kind, reason: reason) }
        }
    }

    public struct Refusal: Sendable, Hashable {
        public let kind: FindingKind
        public let reason: String
    }

    /// NaCl's `nacl-amd64-zero-extends` (validator_ragel's *.def): with a 32-bit register
    /// destination these clear the upper half, so the next instruction may use the register as an
    /// index. Not ADC, SBB, shifts, rotates, CMOV, BSF/BSR or CMPXCHG, whose results NaCl does not
    /// trust. A mnemonic that is not here restricts nothing (default deny).
    public static let zeroExtendingMnemonics: Set<String> = [
        "mov", "add", "sub", "and", "or", "xor", "inc", "dec", "neg", "not", "lea", "imul",
        "movzx", "movsx", "movsxd", "movd", "vmovd", "xadd", "xchg",
    ]

    public static func classify(_ form: Form) -> Classification {
        var c = Classification()
        classifyFlow(form, &c)
        for member in form.classes.members { classifyClass(member, form, &c) }
        for operand in form.operands { classifyOperand(operand, form, &c) }
        // Registers before the memory they address, so that LEAVE is refused for writing %rbp.
        let implicit = form.implicitRegisters.filter { !$0.register.hasPrefix("[") } + form.implicitRegisters.filter { $0.register.hasPrefix("[") }
        for register in implicit { classifyImplicit(register, form, &c) }
        // Only the destination zero-extends (NaCl: xchg %eax,(%rsp) restricts nothing, and
        // xchg %eax,%esp writes %esp outright).
        if zeroExtendingMnemonics.contains(form.mnemonic) {
            c.facts.insert(.zeroExtends)
            if !c.writes.isEmpty { c.writes[0] |= FormPlan.WriteSlot.zeroExtends }
        }
        if c.writes.count > 3 { c.refuse(.sandboxForbidden, "the model has no rule for more than three written registers") }
        if !c.writes.isEmpty { c.facts.insert(.writesRegisters) }
        if isModifiable(form) { c.facts.insert(.modifiable) }
        return c
    }

    /// NaCl's nacl-amd64-modifiable instructions (general_purpose_instructions.def): the only ones
    /// whose immediate, displacement or branch offset a code replacement may change. MOV between
    /// a register and memory or from an immediate (88, 89, 8A, 8B, B0+r, B8+r, C6 /0, C7 /0), and
    /// CALL rel32 (E8).
    static func isModifiable(_ form: Form) -> Bool {
        guard form.encoding == .legacy, form.map == .oneByte else { return false }
        switch form.mnemonic {
        case "mov": return [0x88, 0x89, 0x8A, 0x8B, 0xB0, 0xB8, 0xC6, 0xC7].contains(form.opcode)
        case "call": return form.opcode == 0xE8
        default: return false
        }
    }

    // MARK: - Control flow

    static func classifyFlow(_ form: Form, _ c: inout Classification) {
        let hasTarget = form.operands.contains { $0.kind.location == .branch }
        guard let flow = form.flow else { return }
        switch flow {
        case .jmp, .jcc:
            if hasTarget { c.facts.insert(.directBranch) }
        case .call:
            c.facts.insert(.call)
            if hasTarget { c.facts.insert(.directBranch) }
        case .xbegin:
            // XBEGIN's fallback address is a jump target like any other.
            if hasTarget { c.facts.formUnion([.directBranch, .xbegin]) }
        case .ijmp:
            c.facts.insert(.indirectBranch)
        case .icall:
            c.facts.formUnion([.indirectBranch, .call])
        case .ret:
            // Sieve is stricter than NaCl here: NaCl's toolchains never emit RET.
            c.facts.insert(.ret)
            c.refuse(.unsafeIndirectBranch, "RET jumps to an unmasked address: use pop and the masked jump")
        case .int:
            c.refuse(.sandboxForbidden, "system calls and interrupts go through the runtime's trampolines")
        case .exception:
            break  // UD2 and friends trap: the runtime sees the fault
        }
        if (flow == .jmp || flow == .jcc || flow == .call || flow == .xbegin) && !hasTarget && !form.classes.contains(.far) {
            c.refuse(.sandboxForbidden, "the model has no rule for a \(flow.rawValue) without a relative target")
        }
    }

    // MARK: - Attributes

    static func classifyClass(_ member: FormClass, _ form: Form, _ c: inout Classification) {
        switch member {
        case .far:
            c.refuse(.sandboxForbidden, "far transfers leave the sandbox's code segment")
        case .privileged:
            // Privileged forms fault at CPL 3, but NaCl refuses them: whole-cache invalidation,
            // descriptor and control state. HLT is the exception NaCl makes: its toolchain pads
            // with it, and it only traps.
            if form.id != "hlt" { c.refuse(.sandboxForbidden, "a privileged instruction (\(form.mnemonic)): system state") }
        case .segmentLoad:
            c.refuse(.sandboxForbidden, "segment register writes change what addresses mean")
        case .io:
            c.refuse(.sandboxForbidden, "port I/O")
        case .vsib, .gather, .scatter:
            c.refuse(.sandboxForbidden, "a vector index cannot be restricted to the sandbox (gathers and scatters)")
        case .sibMemory:
            c.refuse(.sandboxForbidden, "the model has no rule for AMX's strided SIB memory operand")
        case .stack:
            c.facts.insert(.stackEngine)
        case .string:
            break  // its %rsi/%rdi operands carry the rule
        case .nop:
            break  // its memory operand is accessed by nobody
        case .reservedNop:
            // NOPs today, other instructions on some CPUs (MPX's BNDLDX/BNDSTX reach bound tables anywhere).
            c.refuse(.sandboxForbidden, "a reserved NOP means another instruction on some processors")
        case .lockable, .repeatable, .repne, .nonTemporal, .cetTracked, .serializing:
            break  // the policy's business (errata), not the sandbox's
        case .default64, .force64, .intelForce64, .modIgnored, .distinctRegisters, .distinctDestination, .no66, .noF2F3:
            break  // decoding facts: the decoder enforces them
        case .opmask, .opmaskRequired, .zeroing, .broadcast, .roundingControl, .suppressExceptions:
            break  // EVEX masking and rounding touch only the program's registers
        }
    }

    // MARK: - Explicit operands

    static func classifyOperand(_ operand: Operand, _ form: Form, _ c: inout Classification) {
        let kind = operand.kind
        switch kind.use {
        case .value: break
        case .address:
            c.refuse(.sandboxForbidden, "the model has no rule for memory addressed by a register operand (\(kind.name))")
            return
        }
        switch kind.location {
        case .immediate:
            break
        case .branch:
            if !c.facts.contains(.directBranch) {
                c.refuse(.sandboxForbidden, "the model has no rule for a branch target outside a direct jump or call")
            }
        case .modrmReg:
            classifyRegister(kind, operand.access, place: FormPlan.WriteSlot.modrmReg, form, &c)
        case .modrmRegister:
            classifyRegister(kind, operand.access, place: FormPlan.WriteSlot.modrmRM, form, &c)
        case .opcodeRegister:
            classifyRegister(kind, operand.access, place: FormPlan.WriteSlot.opcodeRegister, form, &c)
        case .vvvv:
            classifyRegister(kind, operand.access, place: FormPlan.WriteSlot.vvvv, form, &c)
        case .is4:
            classifyRegister(kind, operand.access, place: nil, form, &c)
        case .modrmRegisterOrMemory:
            classifyRegister(kind, operand.access, place: FormPlan.WriteSlot.modrmRM, form, &c)
            // An r/m operand's '-' can be a zeroing idiom of the database's sample (sub al, al): only
            // the NOPs are trusted to access nothing there.
            classifyMemory(form.classes.contains(.nop) ? .none : .read, &c)
        case .memory:
            classifyMemory(operand.access, &c)
        case .fixedRegister:
            classifyFixed(kind.name, kind.registerClass, operand.access, form, &c)
        case .implicitMemory:
            classifyImplicitMemory(kind.name, form, &c)
        case .memoryOffset:
            c.refuse(.unsafeMemoryOperand, "a 64-bit absolute address (moffs) reaches outside the sandbox")
        case .vsib:
            c.refuse(.sandboxForbidden, "a vector index cannot be restricted to the sandbox (gathers and scatters)")
        case .sibMemory:
            c.refuse(.sandboxForbidden, "the model has no rule for AMX's strided SIB memory operand")
        }
    }

    /// A ModRM memory operand: the core checks base and index of each instance, unless nothing is
    /// accessed (LEA, NOPs, prefetches: access '-').
    static func classifyMemory(_ access: Access, _ c: inout Classification) {
        switch access {
        case .none: c.facts.insert(.noMemoryAccess)
        case .read, .write, .readWrite, .conditionalRead, .conditionalWrite, .readConditionalWrite: c.facts.insert(.memoryAccess)
        }
    }

    /// A register operand encoded at `place` (nil: a place the core cannot name, such as imm8[7:4]).
    static func classifyRegister(_ kind: OperandKind, _ access: Access, place: UInt8?, _ form: Form, _ c: inout Classification) {
        switch FileRule(kind.registerClass) {
        case .program:
            return
        case .refused(let reason):
            c.refuse(.sandboxForbidden, "\(reason) (\(kind.name))")
        case .general(let width):
            guard access.writes else { return }
            guard let place else {
                c.refuse(.sandboxForbidden, "the model has no rule for a general register written through \(kind.name)")
                return
            }
            c.writes.append(width | place)
        }
    }

    /// AL, CL, AX, DX, EAX, RAX, ST0, FS, GS: named by the form, never %r15, %rsp or %rbp.
    static func classifyFixed(_ name: String, _ file: OperandKind.RegisterClass, _ access: Access, _ form: Form, _ c: inout Classification) {
        guard let register = Registers.byName[name], register.file == file else {
            c.refuse(.sandboxForbidden, "the model has no rule for register operand \(name)")
            return
        }
        switch FileRule(register.file) {
        case .program:
            break
        case .refused(let reason):
            c.refuse(.sandboxForbidden, "\(reason) (\(name))")
        case .general:
            guard access.writes else { return }
            switch register.number {
            case 15: c.refuse(.reservedRegisterWrite, "writes %r15, the sandbox base")
            case 4, 5: c.refuse(.stackPointerWrite, "writes %\(name) outside the sanctioned sequences")
            case 0 where register.file == .gpr32:
                c.writes.append(FormPlan.WriteSlot.width32 | FormPlan.WriteSlot.rax)  // `add eax, imm32` restricts %rax
            default: break
            }
        }
    }

    /// Memory the form addresses through fixed registers.
    static func classifyImplicitMemory(_ name: String, _ form: Form, _ c: inout Classification) {
        switch name {
        case "seg_rsi" where form.classes.contains(.string):
            c.facts.insert(.stringRSI)  // only after mov %esi,%esi; lea (%r15,%rsi),%rsi
        case "es_rdi" where form.classes.contains(.string), "seg_rdi" where form.mnemonic.contains("maskmov"):
            c.facts.insert(.stringRDI)  // only after mov %edi,%edi; lea (%r15,%rdi),%rdi
        default:
            c.refuse(.sandboxForbidden, "the model has no rule for the implicit memory operand \(name) of \(form.mnemonic)")
            return
        }
        c.implicitMemory = true
    }

    // MARK: - Implicit registers and state

    static func classifyImplicit(_ implicit: ImplicitRegister, _ form: Form, _ c: inout Classification) {
        let name = implicit.register, access = implicit.access
        switch SystemState(name) {
        case .register(let register):
            switch FileRule(register.file) {
            case .program:
                break
            case .refused(let reason):
                c.refuse(.sandboxForbidden, "\(reason) (\(name))")
            case .general:
                guard access.writes else { return }
                switch register.number {
                case 15: c.refuse(.reservedRegisterWrite, "writes %r15, the sandbox base, implicitly")
                case 5 where !register.highByte: c.refuse(.stackPointerWrite, "writes %rbp implicitly (\(form.mnemonic))")
                case 4 where !register.highByte:
                    // Pushes, pops and calls move %rsp by a few bytes and access memory there: a
                    // guard page stops a runaway. Nothing else writes it implicitly.
                    if !form.classes.contains(.stack) { c.refuse(.stackPointerWrite, "writes %rsp implicitly (\(form.mnemonic))") }
                default: break
                }
            }
        case .flagsImage:
            c.refuse(.sandboxForbidden, "the flags image (IF, AC, ...) is not the program's state")
        case .descriptorTable:
            c.refuse(.sandboxForbidden, "descriptor-table registers reveal kernel addresses (\(name))")
        case .performanceCounter:
            c.refuse(.sandboxForbidden, "performance counters are shared with other programs")
        case .timeStampCounter:
            break  // a policy's choice (the `timers` group), not the model's
        case .smx:
            c.refuse(.sandboxForbidden, "safer-mode (SMX) state")
        case .segmentBase:
            c.refuse(.sandboxForbidden, "FS/GS base reads and writes change or reveal what addresses mean")
        case .bitOffset:
            c.facts.insert(.bitOffset)  // the core refuses the memory form: the offset moves the address up to 2^60 bytes
        case .memoryThrough(let register):
            c.refuse(.sandboxForbidden, "the model has no rule for memory addressed through %\(register) without an operand")
        case .unknown:
            c.refuse(.sandboxForbidden, "the model has no rule for implicit state \(name)")
        }
    }

    /// What the model makes of a register file, wherever its register appears.
    enum FileRule {
        /// General registers: reads are free, writes are checked per instance (write slots).
        case general(width: UInt8)
        /// The program's own registers, whatever it does with them.
        case program
        case refused(String)

        init(_ file: OperandKind.RegisterClass) {
            switch file {
            case .gpr8: self = .general(width: FormPlan.WriteSlot.width8)
            case .gpr16: self = .general(width: FormPlan.WriteSlot.width16)
            case .gpr32: self = .general(width: FormPlan.WriteSlot.width32)
            case .gpr64: self = .general(width: FormPlan.WriteSlot.width64)
            case .mmx, .xmm, .ymm, .zmm, .opmask, .tile, .x87: self = .program
            case .segment: self = .refused("segment registers are not the program's state")
            case .control, .debug: self = .refused("control and debug registers are system state")
            case .none: self = .refused("the model has no rule for a register outside every register file")
            }
        }
    }

    /// An implicit register or piece of state, as the database names it.
    enum SystemState {
        case register(Registers.Register)
        case flagsImage, descriptorTable, performanceCounter, timeStampCounter, smx, segmentBase, bitOffset
        case memoryThrough(String)
        case unknown

        init(_ name: String) {
            if let register = Registers.byName[name] { self = .register(register); return }
            if name.hasPrefix("["), name.hasSuffix("]") { self = .memoryThrough(String(name.dropFirst().dropLast())); return }
            switch name {
            case "rflags": self = .flagsImage
            case "gdtr", "idtr", "ldtr", "tr": self = .descriptorTable
            case "pmc": self = .performanceCounter
            case "tsc": self = .timeStampCounter
            case "smx": self = .smx
            case "fsbase", "gsbase": self = .segmentBase
            case "bit-offset": self = .bitOffset
            default: self = .unknown
            }
        }
    }

    /// Every register name of every file, with its file and number.
    enum Registers {
        struct Register {
            let file: OperandKind.RegisterClass
            let number: Int
            /// AH, CH, DH, BH: numbers 4 to 7 without REX, bits 8-15 of registers 0 to 3.
            let highByte: Bool
        }

        static let byName: [String: Register] = {
            var names: [String: Register] = [:]
            for file in OperandKind.RegisterClass.allCases {
                for number in 0..<32 {
                    if let name = Decoder.name(file, number, anyREX: true), names[name] == nil {
                        names[name] = Register(file: file, number: number, highByte: false)
                    }
                    if file == .gpr8, (4..<8).contains(number), let name = Decoder.name(file, number, anyREX: false) {
                        names[name] = Register(file: file, number: number - 4, highByte: true)
                    }
                }
            }
            return names
        }()
    }
}
