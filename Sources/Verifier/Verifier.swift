import Policy
import X86

/// The Swift verifier engine: decodes code strictly, applies the compiled policy to every
/// instruction, and (model `nacl-x86-64`) NaCl's layout, register and memory rules.
///
/// Deliberately stricter than NaCl where NaCl trusts an implicit operand: implicit writes to
/// %rbp (LEAVE, ENTER) and to %rsp outside the stack engine are refused, as are RET and every
/// instruction with an implicit memory operand outside the string sequences.
public struct Verifier: Sendable {
    public let compiled: CompiledPolicy
    public let decoder: Decoder
    /// The NaCl pass's shortcut tables (nil: every instruction takes the full path).
    let fast: FastTables?

    /// `fastPath: false` makes every instruction take the full decode and check (the tests
    /// compare the two).
    public init(_ compiled: CompiledPolicy, decoder: Decoder? = nil, fastPath: Bool = true) {
        self.compiled = compiled
        // The NaCl model asks for the analysis itself, where an instruction has a legacy prefix.
        self.decoder = decoder ?? (compiled.needsRedundantPrefixes ? .shared : .withoutRedundancy)
        fast = compiled.model == .naclX86_64 && fastPath ? FastTables(compiled, decoder: self.decoder) : nil
    }

    public func verify(_ bytes: [UInt8], base: UInt64 = 0) -> VerificationReport {
        bytes.withUnsafeBytes { verify($0, base: base) }
    }

    public func verify(_ code: UnsafeRawBufferPointer, base: UInt64) -> VerificationReport {
        // The engines read through the buffer's base address: give empty code one too.
        guard code.baseAddress != nil else { return [UInt8(0)].withUnsafeBytes { verify(.init(rebasing: $0[0..<0]), base: base) } }
        switch compiled.model {
        case .none: return sweep(code)
        case .naclX86_64:
            return compiled.plans.withUnsafeBufferPointer { plans in
                var pass = NaClPass(verifier: self, code: code, base: base, plans: plans)
                return pass.run()
            }
        }
    }

    /// Model `none`: a linear sweep, the policy and the decoder only (no safety claim).
    private func sweep(_ code: UnsafeRawBufferPointer) -> VerificationReport {
        var report = VerificationReport()
        report.bytes = code.count
        let bytes = code.baseAddress!.assumingMemoryBound(to: UInt8.self)
        var offset = 0
        while offset < code.count {
            var insn = Instruction()
            if let reason = decoder.decode(bytes + offset, available: code.count - offset, into: &insn) {
                report.findings.append(Finding(.invalid, offset: offset, length: 1, form: nil, reason.rawValue))
                offset += 1
            } else {
                report.instructions += 1
                if let finding = policyFinding(insn, at: offset) { report.findings.append(finding) }
                offset += insn.length
            }
        }
        return report
    }

    /// The decoder's refusal or the policy's ban, if either refuses the instruction.
    func policyFinding(_ insn: Instruction, at offset: Int) -> Finding? {
        let form = insn.formIndex
        if let refusal = insn.refusal {
            return Finding(.invalid, offset: offset, length: insn.length, form: form, refusal.rawValue)
        }
        let plan = compiled.plans[form]
        switch plan.decision {
        case .accept:
            return nil
        case .refuse:
            let rule = plan.rule
            return Finding(.banned, offset: offset, length: insn.length, form: form,
                           rule >= 0 ? "refused by the policy" : "not trusted by the policy", rule: rule >= 0 ? Int(rule) : nil)
        case .conditional:
            let (accepted, index) = compiled.policy.decision(insn, decoder: decoder)
            if accepted { return nil }
            return Finding(.banned, offset: offset, length: insn.length, form: form,
                           index != nil ? "refused by the policy" : "not trusted by the policy", rule: index)
        }
    }
}

/// One verification of one piece of code under NaCl's x86-64 rules.
struct NaClPass {
    let verifier: Verifier
    let code: UnsafeRawBufferPointer
    /// The code's first byte (the buffer always has a base address here).
    let bytes: UnsafePointer<UInt8>
    let base: UInt64
    let bundleSize: Int

    var report = VerificationReport()
    /// Instruction starts a direct jump may land on.
    let validTargets: TargetBitmap
    /// (branch offset, branch length, target offset from the code's start)
    var branches: [(Int, Int, Int)] = []
    /// The instructions of the current bundle so far (at most one per byte).
    let bundle: UnsafeMutableBufferPointer<(offset: Int, length: Int, form: Int)>
    var bundleCount = 0
    /// The register zero-extended by the previous instruction (NaCl's restricted register).
    var restricted: Int = -1
    let plans: UnsafeBufferPointer<FormPlan>
    /// The instruction being checked (decoded in place: the checks read it here), and where it is, for `refuse`.
    var insn = Instruction()
    var current: (offset: Int, length: Int, form: Int) = (0, 0, 0)

    mutating func refuse(_ kind: FindingKind, _ message: String) {
        report.findings.append(Finding(kind, offset: current.offset, length: current.length, form: current.form, message))
    }

    init(verifier: Verifier, code: UnsafeRawBufferPointer, base: UInt64, plans: UnsafeBufferPointer<FormPlan>) {
        self.verifier = verifier
        self.plans = plans
        self.code = code
        bytes = code.baseAddress!.assumingMemoryBound(to: UInt8.self)
        self.base = base
        bundleSize = verifier.compiled.bundleSize
        validTargets = TargetBitmap(count: code.count + 1)
        bundle = .allocate(capacity: bundleSize)
    }

    var decoder: Decoder { verifier.decoder }

    mutating func run() -> VerificationReport {
        report.bytes = code.count
        if base % UInt64(bundleSize) != 0 {
            report.findings.append(Finding(.layout, offset: 0, length: 0, form: nil,
                                           "the code starts at 0x\(String(base, radix: 16)), not on a \(bundleSize)-byte bundle boundary"))
        }
        let decoder = verifier.decoder
        var offset = 0
        while offset < code.count {
            let bundleEnd = min(code.count, offset + bundleSize - Int((base &+ UInt64(offset)) % UInt64(bundleSize)))
            bundleCount = 0
            restricted = -1
            while offset < bundleEnd {
                if let fast = verifier.fast, code.count - offset >= 16 {
                    let length = fastStep(fast, at: offset, room: bundleEnd - offset)
                    if length != 0 { offset += length; continue }
                }
                insn = Instruction()
                if let reason = decoder.decode(bytes + offset, available: code.count - offset, into: &insn) {
                    report.findings.append(Finding(.invalid, offset: offset, length: 1, form: nil, reason.rawValue))
                    offset = bundleEnd  // NaCl resumes at the next bundle
                    break
                }
                if offset + insn.length > bundleEnd && bundleEnd < code.count || offset + insn.length > code.count {
                    report.findings.append(Finding(.bundleCrossing, offset: offset, length: insn.length, form: insn.formIndex,
                                                   "the instruction crosses the bundle boundary at offset \(bundleEnd)"))
                    offset = bundleEnd
                    break
                }
                report.instructions += 1
                validTargets[offset] = true
                check(at: offset)
                bundle[bundleCount] = (offset, insn.length, insn.formIndex)
                bundleCount += 1
                offset += insn.length
            }
            if restricted == 4 || restricted == 5, bundleCount > 0 {
                let last = bundle[bundleCount - 1]
                report.findings.append(Finding(.stackPointerWrite, offset: last.offset, length: last.length, form: last.form,
                    "%\(restricted == 4 ? "esp" : "ebp") is zero-extended at the end of the bundle without the add %r15 that must follow"))
            }
            offset = max(offset, bundleEnd)
        }
        checkBranchTargets()
        validTargets.deallocate()
        bundle.deallocate()
        return report
    }

    // MARK: - One instruction

    mutating func check(at offset: Int) {
        // Through a pointer: the checks read a few fields of the plan, not a copy of it.
        let plan = plans.baseAddress.unsafelyUnwrapped + insn.formIndex
        let facts = plan.pointee.facts
        current = (offset, insn.length, insn.formIndex)
        if insn.refusal != nil || plan.pointee.decision != .accept {
            if let finding = verifier.policyFinding(insn, at: offset) {
                report.findings.append(finding)
                if insn.refusal != nil { restricted = -1; return }
            }
        }
        if plan.pointee.forbidden != 0 { refuse(.sandboxForbidden, verifier.compiled.forbiddenReasons[Int(plan.pointee.forbidden) - 1]) }
        let prefixes = insn.prefixes
        if prefixes.rawValue & Prefixes.legacy.rawValue != 0 { checkLegacyPrefixes(plan, at: offset) }

        // %rsp/%rbp: the sanctioned forms first, then every register the instruction writes.
        // Every sanctioned form is a REX byte, then two to seven bytes without another prefix.
        let special = facts.contains(.sanctionedForm) && insn.rex != 0 && insn.prefixCount == 1 ? Self.special(code, offset, insn.length) : .none
        let pending = restricted
        var newRestricted = -1
        switch special {
        case .stackMove:
            if pending == 4 || pending == 5 { refuse(.stackPointerWrite, "%\(pending == 4 ? "esp" : "ebp") was left zero-extended") }
        case .rspSandboxing, .rbpSandboxing:
            let register = special == .rspSandboxing ? 4 : 5
            if pending != register {
                refuse(.stackPointerWrite, "\(special == .rspSandboxing ? "%rsp" : "%rbp") re-based without a zero-extending write just before")
            }
            validTargets[offset] = false
        case .none:
            if pending == 4 || pending == 5 {
                refuse(.stackPointerWrite, "%\(pending == 4 ? "esp" : "ebp") was zero-extended but this is not the add %r15 that must follow")
            }
            if plan.pointee.writes.0 != 0 || plan.pointee.implicitWrites != 0 { newRestricted = checkWrites(plan) }
        }

        // (A VSIB operand's index is a vector: the model forbids those forms outright.)
        if insn.hasMemoryModRM && !facts.contains(.noMemoryAccess) && !plan.pointee.vsib {
            checkMemory(at: offset, pending: pending)
        }
        if facts.contains(.indirectBranch) { checkIndirectBranch(at: offset) }
        if facts.contains(.ret) { refuse(.unsafeIndirectBranch, "RET jumps to an unmasked address: use pop and the masked jump") }
        if facts.contains(.directBranch), let target = Self.relativeTarget(insn, code, offset) {
            branches.append((offset, insn.length, offset + insn.length + target))
            if facts.contains(.call) { checkCallAlignment(offset + insn.length, at: offset) }
        }
        if facts.contains(.stringRSI) || facts.contains(.stringRDI) { checkStringSequence(facts, at: offset) }
        restricted = newRestricted
    }

    /// FS/GS overrides, 0x67 on memory, and prefixes the instruction ignores (outside NaCl's NOPs).
    mutating func checkLegacyPrefixes(_ plan: UnsafePointer<FormPlan>, at offset: Int) {
        let prefixes = insn.prefixes
        if prefixes.rawValue & (Prefixes.segmentFS.rawValue | Prefixes.segmentGS.rawValue) != 0 {
            refuse(.sandboxForbidden, "an FS or GS segment override reaches outside the sandbox")
        }
        if prefixes.contains(.addressSize) && (insn.hasMemoryModRM || plan.pointee.implicitMemory) {
            refuse(.sandboxForbidden, "0x67 truncates the address to 32 bits: outside the sandbox")
        }
        if !Self.isNaClNOP(bytes + offset, insn.length) {
            // The analysis runs here, for the few instructions with a legacy prefix, unless the decoder did it.
            let redundant = decoder.redundancy == .all ? insn.redundantPrefixes : decoder.redundantPrefixes(of: insn, code: bytes + offset)
            if Self.redundantLegacyPrefix(bytes + offset, insn.prefixCount, redundant) {
                refuse(.sandboxForbidden, "a prefix the instruction ignores: NaCl accepts those only in its NOP strings")
            }
        }
    }

    /// Explicit register writes: %r15 never, %rsp/%rbp only as a zero-extending 32-bit first
    /// half. Returns the register this instruction restricts (-1: none).
    @_transparent mutating func checkWrites(_ plan: UnsafePointer<FormPlan>) -> Int {
        var restricts = -1
        let zeroExtends = plan.pointee.facts.contains(.zeroExtends)
        // The register at each place a write slot names (ModRM.reg, ModRM.rm, the opcode, vvvv),
        // a byte each, 0xFF for a memory ModRM.rm: picked by shifting, not by a branch per place.
        let v = insn.vector
        let rmRegister = insn.hasMemoryModRM ? 0xFF : UInt32(insn.modrm & 7 | v.b << 3)
        let numbers = UInt32((insn.modrm >> 3) & 7 | v.r << 3) | rmRegister << 8
            | UInt32(insn.opcode & 7 | v.b << 3) << 16 | UInt32(v.vvvv & 15) << 24
        for k in 0..<3 {
            let slot = k == 0 ? plan.pointee.writes.0 : k == 1 ? plan.pointee.writes.1 : plan.pointee.writes.2
            if slot == 0 { break }
            let place = Int(slot & 0x0F)
            guard place >= FormPlan.WriteSlot.modrmReg && place <= FormPlan.WriteSlot.vvvv else { continue }
            let number = Int((numbers >> UInt32((place - 1) * 8)) & 0xFF)
            if number == 0xFF { continue }
            let width = slot & 0xF0
            if width == FormPlan.WriteSlot.width8 && number >= 4 && number < 8 && insn.rex == 0 { continue }  // AH..BH
            if number == 15 { refuse(.reservedRegisterWrite, "writes %r15, the sandbox base"); continue }
            let zeroExtending = zeroExtends && width == FormPlan.WriteSlot.width32
            if (number == 4 || number == 5) && !zeroExtending {
                refuse(.stackPointerWrite, "writes \(number == 4 ? "%rsp" : "%rbp") outside the sanctioned sequences")
                continue
            }
            if zeroExtending && restricts < 0 { restricts = number }
        }
        if plan.pointee.implicitWrites & 1 != 0 { refuse(.reservedRegisterWrite, "writes %r15 implicitly") }
        if plan.pointee.implicitWrites & 2 != 0 { refuse(.stackPointerWrite, "writes %rbp implicitly") }
        if plan.pointee.implicitWrites & 4 != 0 && !plan.pointee.facts.contains(.stackEngine) { refuse(.stackPointerWrite, "writes %rsp implicitly") }
        return restricts
    }

    mutating func checkMemory(at offset: Int, pending: Int) {
        let mod = insn.modrm >> 6, rm = insn.modrm & 7
        let b = Int(insn.vector.b), x = Int(insn.vector.x)
        if mod == 0 && rm == 5 { return }  // %rip-relative
        // Without a SIB byte the base is ModRM.rm; with one, SIB.base (none: mod 0 with base 5).
        let hasSIB = rm == 4
        let sibBase = Int(insn.sib & 7)
        let base = (hasSIB ? sibBase : Int(rm)) | b << 3
        let sibIndex = Int((insn.sib >> 3) & 7) | x << 3
        if hasSIB && sibBase == 5 && mod == 0 {
            refuse(.unsafeMemoryOperand, "an absolute address: the base must be %r15, %rsp, %rbp or %rip")
            return
        }
        // %r15, %rsp and %rbp: bits 15, 4 and 5.
        if (1 << base) & 0x8030 == 0 {
            refuse(.unsafeMemoryOperand, "the base \(Self.name(base)) is not %r15, %rsp, %rbp or %rip")
        }
        let index: Int? = hasSIB && sibIndex != 4 ? sibIndex : nil
        if let index {
            if index == pending && pending != 4 && pending != 5 {
                validTargets[offset] = false  // the access and the zero-extension are one unit
            } else {
                refuse(.unrestrictedIndex, "the index \(Self.name(index)) was not zero-extended by the instruction just before")
            }
        }
    }

    /// `and $~(bundle-1),%eXX; add %r15,%rXX; jmp|call *%rXX`, all in one bundle.
    mutating func checkIndirectBranch(at offset: Int) {
        guard !insn.hasMemoryModRM, bundleCount >= 2 else {
            refuse(.unsafeIndirectBranch, "an indirect branch outside the masked sequence and $~\(bundleSize - 1),%eXX; add %r15,%rXX")
            return
        }
        let register = Int(insn.modrm & 7) | Int(insn.vector.b) << 3
        let mask = bundle[bundleCount - 2], add = bundle[bundleCount - 1]
        guard register != 15, Self.isMask(bytes + mask.offset, mask.length, register: register, bundleSize: bundleSize),
              Self.isAddR15(bytes + add.offset, add.length, register: register) else {
            refuse(.unsafeIndirectBranch, "an indirect branch outside the masked sequence and $~\(bundleSize - 1),%eXX; add %r15,%rXX")
            return
        }
        validTargets[add.offset] = false
        validTargets[offset] = false
        if plans[insn.formIndex].facts.contains(.call) { checkCallAlignment(offset + insn.length, at: offset) }
    }

    mutating func checkCallAlignment(_ end: Int, at offset: Int) {
        guard (base &+ UInt64(end)) % UInt64(bundleSize) != 0 else { return }
        let finding = Finding(.callAlignment, offset: offset, length: insn.length, form: insn.formIndex,
                              "the call does not end at a bundle end, so its return address is not bundle-aligned")
        if verifier.compiled.callAlignment == .refuse { report.findings.append(finding) } else { report.warnings.append(finding) }
    }

    /// String instructions only right after their %rsi/%rdi sandboxing, in the same bundle.
    mutating func checkStringSequence(_ facts: CompiledPolicy.ModelFacts, at offset: Int) {
        var needed: [[UInt8]] = []
        if facts.contains(.stringRSI) { needed += [[0xF6], [0x49, 0x8D, 0x34, 0x37]] }
        if facts.contains(.stringRDI) { needed += [[0xFF], [0x49, 0x8D, 0x3C, 0x3F]] }
        guard bundleCount >= needed.count else {
            refuse(.stringOutsideSequence, "a string instruction outside its %rsi/%rdi sandboxing sequence")
            return
        }
        let first = bundleCount - needed.count
        for (k, pattern) in needed.enumerated() {
            let entry = bundle[first + k]
            let instruction = Array(code[entry.offset..<entry.offset + entry.length])
            let matches = pattern.count == 1 ? Self.isMovSelf(instruction, modrm: pattern[0]) : instruction == pattern
            if !matches {
                refuse(.stringOutsideSequence, "a string instruction outside its %rsi/%rdi sandboxing sequence")
                return
            }
        }
        for k in first + 1 ..< bundleCount { validTargets[bundle[k].offset] = false }
        validTargets[offset] = false
    }

    mutating func checkBranchTargets() {
        for (offset, length, target) in branches {
            let inside = target >= 0 && target < code.count
            let address = Int64(bitPattern: base) &+ Int64(target)
            if inside ? !validTargets[target] : address % Int64(bundleSize) != 0 {
                let form = verifier.decoder.decode(code, at: offset)
                let index: Int? = { if case .instruction(let i) = form { return i.formIndex }; return nil }()
                report.findings.append(Finding(.badJumpTarget, offset: offset, length: length, form: index,
                    inside ? "jumps to offset \(target), which is not an instruction start a jump may land on"
                           : "jumps outside the code to 0x\(String(UInt64(bitPattern: address), radix: 16)), which is not bundle-aligned"))
            }
        }
        report.findings.sort { ($0.offset, $0.kind) < ($1.offset, $1.kind) }
    }

    // MARK: - Byte patterns of NaCl's sanctioned instructions

    /// A redundant prefix other than REX (NaCl's patterns admit optional REX bits) among the
    /// first `prefixCount` bytes; `redundant` has a bit per prefix position.
    static func redundantLegacyPrefix(_ code: UnsafePointer<UInt8>, _ prefixCount: Int, _ redundant: UInt16) -> Bool {
        for k in 0..<prefixCount where redundant & (1 << k) != 0 && code[k] & 0xF0 != 0x40 { return true }
        return false
    }

    /// NaCl's padding NOPs: `66{1,6} 2E 0F 1F 84 00 00 00 00 00`.
    static func isNaClNOP(_ code: UnsafePointer<UInt8>, _ length: Int) -> Bool {
        let count = length - 9
        guard (1...6).contains(count) else { return false }
        for k in 0..<count where code[k] != 0x66 { return false }
        let tail: (UInt8, UInt8, UInt8, UInt8) = (0x2E, 0x0F, 0x1F, 0x84)
        guard code[count] == tail.0, code[count + 1] == tail.1, code[count + 2] == tail.2, code[count + 3] == tail.3 else { return false }
        for k in count + 4 ..< length where code[k] != 0 { return false }
        return true
    }

    enum Special { case none, stackMove, rspSandboxing, rbpSandboxing }

    static func special(_ code: UnsafeRawBufferPointer, _ at: Int, _ length: Int) -> Special {
        func byte(_ k: Int) -> UInt8 { code[at + k] }
        func equals(_ pattern: [UInt8]) -> Bool {
            pattern.count == length && pattern.indices.allSatisfy { code[at + $0] == pattern[$0] }
        }
        let rex = byte(0)
        if length == 3 {
            let (op, modrm) = (byte(1), byte(2))
            if rex == 0x48 || rex == 0x4A {
                // mov %rsp,%rbp / mov %rbp,%rsp, in both directions
                if (op == 0x89 && (modrm == 0xE5 || modrm == 0xEC)) || (op == 0x8B && (modrm == 0xEC || modrm == 0xE5)) { return .stackMove }
            }
            if rex == 0x4C || rex == 0x4E {
                if (op == 0x01 || op == 0x09) && modrm == 0xFC { return .rspSandboxing }
                if op == 0x01 && modrm == 0xFD { return .rbpSandboxing }
            }
            if rex == 0x49 || rex == 0x4B {
                if (op == 0x03 || op == 0x0B) && modrm == 0xE7 { return .rspSandboxing }
                if op == 0x03 && modrm == 0xEF { return .rbpSandboxing }
            }
            return .none
        }
        if length == 4 && rex == 0x48 && byte(1) == 0x83 && byte(2) == 0xE4 && byte(3) >= 0x80 { return .stackMove }
        guard rex == 0x4A else { return .none }
        if equals([0x4A, 0x8D, 0x24, 0x3C]) || equals([0x4A, 0x8D, 0x64, 0x3C, 0x00])
            || equals([0x4A, 0x8D, 0xA4, 0x3C, 0, 0, 0, 0]) { return .rspSandboxing }
        if equals([0x4A, 0x8D, 0x6C, 0x3D, 0x00]) || equals([0x4A, 0x8D, 0xAC, 0x3D, 0, 0, 0, 0]) { return .rbpSandboxing }
        return .none
    }

    /// `and $~(bundle-1),%eXX` (83 /4 ib), with at most a REX whose B bit names the register.
    static func isMask(_ bytes: UnsafePointer<UInt8>, _ length: Int, register: Int, bundleSize: Int) -> Bool {
        var b = bytes, n = length
        if n == 4 && b[0] & 0xF0 == 0x40 {
            guard b[0] & 0x08 == 0, Int(b[0] & 1) == register >> 3 else { return false }
            b += 1
            n = 3
        } else if register >= 8 {
            return false
        }
        return n == 3 && b[0] == 0x83 && b[1] == 0xE0 | UInt8(register & 7) && b[2] == UInt8(truncatingIfNeeded: -bundleSize)
    }

    /// `add %r15,%rXX`, either direction (01 /r or 03 /r), REX.W.
    static func isAddR15(_ bytes: UnsafePointer<UInt8>, _ length: Int, register: Int) -> Bool {
        guard length == 3, bytes[0] & 0xF8 == 0x48 else { return false }
        let rex = bytes[0], modrm = bytes[2]
        if bytes[1] == 0x01 {
            return rex & 4 != 0 && Int(rex & 1) == register >> 3 && modrm == 0xF8 | UInt8(register & 7)
        }
        if bytes[1] == 0x03 {
            return rex & 1 != 0 && Int(rex >> 2 & 1) == register >> 3 && modrm == 0xC7 | UInt8(register & 7) << 3
        }
        return false
    }

    /// `mov %esi,%esi` / `mov %edi,%edi` (89 or 8B), optionally with a REX.X NaCl tolerates.
    static func isMovSelf(_ bytes: [UInt8], modrm: UInt8) -> Bool {
        var b = bytes[...]
        if b.first == 0x42 { b = b.dropFirst() }
        return Array(b) == [0x89, modrm] || Array(b) == [0x8B, modrm]
    }

    static func registerNumber(_ kind: OperandKind, _ insn: Instruction) -> Int? {
        let v = insn.vector
        switch kind.location {
        case .modrmReg: return Int((insn.modrm >> 3) & 7 | v.r << 3)
        case .modrmRegister, .modrmRegisterOrMemory: return insn.hasMemoryModRM ? nil : Int(insn.modrm & 7 | v.b << 3)
        case .opcodeRegister: return Int(insn.opcode & 7 | v.b << 3)
        case .vvvv: return Int(v.vvvv & 15)
        case .fixedRegister:
            return ["al": 0, "ax": 0, "eax": 0, "rax": 0, "cl": 1, "dx": 2][kind.name]
        default: return nil
        }
    }

    static func relativeTarget(_ insn: Instruction, _ code: UnsafeRawBufferPointer, _ offset: Int) -> Int? {
        guard insn.immediateSize > 0, let base = code.baseAddress else { return nil }
        return displacement(base.assumingMemoryBound(to: UInt8.self) + offset + Int(insn.immediateOffset), size: Int(insn.immediateSize))
    }

    /// A branch's signed displacement of `size` bytes (1, 2 or 4), little-endian at `p`.
    static func displacement(_ p: UnsafePointer<UInt8>, size: Int) -> Int? {
        switch size {
        case 1: return Int(Int8(bitPattern: p[0]))
        case 2: return Int(Int16(bitPattern: UInt16(p[0]) | UInt16(p[1]) << 8))
        case 4: return Int(Int32(bitPattern: UInt32(p[0]) | UInt32(p[1]) << 8 | UInt32(p[2]) << 16 | UInt32(p[3]) << 24))
        default: return nil
        }
    }

    static func name(_ register: Int) -> String {
        "%" + (Decoder.name(.gpr64, register, anyREX: true) ?? "r?")
    }
}

/// One bit per byte of code: whether a direct jump may land there. A bit rather than a byte
/// keeps it in cache next to the code (NaCl's validator keeps bitmaps too).
struct TargetBitmap {
    private let words: UnsafeMutablePointer<UInt64>

    init(count: Int) {
        let n = count / 64 + 1
        words = .allocate(capacity: n)
        words.initialize(repeating: 0, count: n)
    }

    func deallocate() { words.deallocate() }

    subscript(offset: Int) -> Bool {
        get { words[offset >> 6] & (1 << UInt64(offset & 63)) != 0 }
        nonmutating set {
            if newValue { words[offset >> 6] |= 1 << UInt64(offset & 63) } else { words[offset >> 6] &= ~(1 << UInt64(offset & 63)) }
        }
    }
}

extension Verifier {
    /// Whether these bytes are exactly one instruction that this verifier accepts on its own,
    /// leaving aside the two rules that depend on the code around it: a branch target, and an
    /// index restricted by the instruction before (what a program puts there is checked when the
    /// whole program is verified).
    public func acceptsAlone(_ bytes: [UInt8]) -> Bool {
        guard case .instruction(let insn) = decoder.decode(bytes), insn.length == bytes.count else { return false }
        return verify(bytes, base: 0).findings.allSatisfy { $0.kind == .badJumpTarget || $0.kind == .unrestrictedIndex }
    }
}
