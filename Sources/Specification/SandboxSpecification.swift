/// The sandbox invariant of DESIGN §8 (NaCl x86-64), checked slowly and independently.
///
/// Trust in Sieve's verifier core comes from this second opinion, which shares no table and no
/// code with it: Zydis decodes, and a small abstract interpreter (`InstructionRules.swift`) walks
/// each bundle. It is written to be read, not to be fast. Default deny: whatever Zydis reports that
/// no rule here makes safe (an unknown operand type, register class or memory operand type) is a
/// violation naming it.
public struct SandboxSpecification: Sendable {
    public let bundleSize: Int

    public init(bundleSize: Int = 32) {
        precondition(bundleSize > 0 && bundleSize & (bundleSize - 1) == 0, "bundle size must be a power of two")
        self.bundleSize = bundleSize
    }

    /// The violations of the invariant in `code` loaded at virtual address `base`, in offset order.
    /// Empty means the code satisfies the invariant.
    public func violations(_ code: [UInt8], base: UInt64 = 0) -> [Violation] {
        var violations: [Violation] = []
        // Layout: bundles are judged on virtual addresses. Code that does not start a bundle has a
        // first "bundle" that control can enter in the middle; code that does not end one falls
        // through into bytes nobody checked.
        if base % UInt64(bundleSize) != 0 {
            violations.append(Violation(offset: 0, rule: "layout.base", message: "code starts at 0x\(String(base, radix: 16)), not on a \(bundleSize)-byte bundle boundary"))
        }
        if (base &+ UInt64(code.count)) % UInt64(bundleSize) != 0 {
            violations.append(Violation(offset: code.count, rule: "layout.end", message: "code ends inside a bundle: execution falls through into unchecked bytes"))
        }

        let bundles = decodeBundles(code, base: base, &violations)
        var starts = Set<Int>()
        for bundle in bundles { for insn in bundle { starts.insert(insn.offset) } }

        // The abstract interpreter, bundle by bundle, each from the bundle-start facts.
        var branches: [(offset: Int, target: UInt64)] = []
        var linear: [Violation] = []
        for bundle in bundles {
            linear += interpret(bundle[...], base: base, branches: &branches)
        }
        violations += linear

        // Direct control flow: a target inside the code must be an instruction start from which the
        // rest of its bundle is safe with nothing known but the bundle-start facts: exactly "not
        // inside a sanctioned sequence" (a zero-extension and its use, a re-basing pair, a masked
        // jump), without a list of sequences. A target outside the code must start a bundle.
        let linearKeys = Set(linear.map { ViolationKey(offset: $0.offset, rule: $0.rule) })
        for (offset, target) in branches {
            let end = base &+ UInt64(code.count)
            guard target >= base, target < end else {
                if target % UInt64(bundleSize) != 0 {
                    violations.append(Violation(offset: offset, rule: "control.target", message: "jump or call to 0x\(String(target, radix: 16)), outside the code and not bundle-aligned"))
                }
                continue
            }
            let targetOffset = Int(target - base)
            guard starts.contains(targetOffset) else {
                violations.append(Violation(offset: offset, rule: "control.target", message: "jump or call to offset \(targetOffset), which is not an instruction start"))
                continue
            }
            if target % UInt64(bundleSize) == 0 { continue }
            guard let bundle = bundles.first(where: { $0.contains { $0.offset == targetOffset } }),
                  let from = bundle.firstIndex(where: { $0.offset == targetOffset }) else { continue }
            var ignored: [(offset: Int, target: UInt64)] = []
            let entered = interpret(bundle[from...], base: base, branches: &ignored)
            if let broken = entered.first(where: { !linearKeys.contains(ViolationKey(offset: $0.offset, rule: $0.rule)) }) {
                violations.append(Violation(offset: offset, rule: "control.into-sequence", message: "jump or call to offset \(targetOffset), inside a sanctioned sequence: entered there, offset \(broken.offset) breaks \(broken.rule) (\(broken.message))"))
            }
        }
        return violations.sorted { ($0.offset, $0.rule, $0.message) < ($1.offset, $1.rule, $1.message) }
    }

    /// Linear decode, split at bundle boundaries. Undecodable bytes and an instruction that crosses
    /// a boundary are violations; decoding resumes at the next bundle start, the only place control
    /// can legitimately reach after them.
    func decodeBundles(_ code: [UInt8], base: UInt64, _ violations: inout [Violation]) -> [[ZydisInstruction]] {
        var bundles: [[ZydisInstruction]] = []
        var current: [ZydisInstruction] = []
        var offset = 0
        func nextBundleStart(after offset: Int) -> Int {
            let address = base &+ UInt64(offset)
            let next = (address / UInt64(bundleSize) + 1) * UInt64(bundleSize)
            return offset + Int(next - address)
        }
        while offset < code.count {
            if offset > 0, (base &+ UInt64(offset)) % UInt64(bundleSize) == 0 {
                bundles.append(current)
                current = []
            }
            guard let insn = ZydisInstruction(code, at: offset) else {
                violations.append(Violation(offset: offset, rule: "decode", message: "Zydis decodes no valid instruction here"))
                offset = nextBundleStart(after: offset)
                continue
            }
            let boundary = nextBundleStart(after: offset)
            if insn.end > boundary {
                violations.append(Violation(offset: offset, rule: "layout.crossing", message: "\(insn.name) (\(insn.length) bytes) crosses the bundle boundary at offset \(boundary)"))
                offset = boundary
                continue
            }
            current.append(insn)
            offset = insn.end
        }
        bundles.append(current)
        return bundles
    }

    /// Runs the abstract interpreter over the instructions of one bundle (or the tail of one, from
    /// a jump target), starting from the bundle-start facts.
    func interpret(_ instructions: ArraySlice<ZydisInstruction>, base: UInt64, branches: inout [(offset: Int, target: UInt64)]) -> [Violation] {
        var facts = RegisterFacts.bundleStart
        var violations: [Violation] = []
        for insn in instructions {
            var rules = InstructionRules(insn: insn, before: facts, bundleSize: bundleSize, base: base)
            facts = rules.apply()
            violations += rules.violations
            if let target = rules.directTarget { branches.append((insn.offset, target)) }
        }
        // %rsp and %rbp hold sandbox addresses at every bundle end: a pending zero-extended value
        // (not yet re-based on %r15) would be a full 32-bit address in the next bundle.
        if let last = instructions.last {
            for sp in [GPR.rsp, GPR.rbp] where !facts[sp].isSandboxAddress {
                violations.append(Violation(offset: last.offset, rule: "stack.bundle-end", message: "\(GPR.name64(sp)) is not re-based on %r15 at the bundle end"))
            }
        }
        return violations
    }
}

/// A refusal: where, which rule (a stable short id), and why.
public struct Violation: Sendable, Hashable, CustomStringConvertible {
    public let offset: Int
    public let rule: String
    public let message: String

    public init(offset: Int, rule: String, message: String) {
        self.offset = offset
        self.rule = rule
        self.message = message
    }

    public var description: String { "\(offset): \(rule): \(message)" }
}

struct ViolationKey: Hashable {
    let offset: Int
    let rule: String
}
