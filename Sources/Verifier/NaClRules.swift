import X86

/// NaCl's x86-64 sandbox rules (DESIGN §8; NaCl's validator_ragel/validator_x86_64.rl) that do
/// not depend on the surrounding code.
public enum NaClRules {
    /// NaCl's `nacl-amd64-zero-extends`: with a 32-bit register destination, these clear the
    /// register's upper half, so the next instruction may use it as an index. Not ADC, SBB,
    /// shifts, rotates, CMOV, BSF/BSR or CMPXCHG, whose results NaCl does not trust.
    public static let zeroExtendingMnemonics: Set<String> = [
        "mov", "add", "sub", "and", "or", "xor", "inc", "dec", "neg", "not", "lea", "imul",
        "movzx", "movsx", "movd", "xadd", "xchg",
    ]

    /// Why the model refuses a form whatever the policy trusts, or nil.
    public static func forbiddenReason(_ form: Form) -> String? {
        let written = form.operands.filter { $0.access.writes }.map(\.kind.registerClass)
        if form.classes.contains(.far) { return "far transfers leave the sandbox's code segment" }
        if form.flow == .int || ["syscall", "sysenter", "sysexit", "sysret", "sysretq", "sysexitq"].contains(form.mnemonic) {
            return "system calls and interrupts go through the runtime's trampolines"
        }
        if form.classes.contains(.segmentLoad) || written.contains(.segment) {
            return "segment register writes change what addresses mean"
        }
        if written.contains(.control) || written.contains(.debug) { return "control and debug register writes" }
        if ["wrfsbase", "wrgsbase"].contains(form.mnemonic) { return "FS/GS base writes change what addresses mean" }
        if form.classes.contains(.vsib) { return "a vector index cannot be restricted to the sandbox (gathers and scatters)" }
        if form.classes.contains(.io) { return "port I/O" }
        let implicitMemory = form.operands.contains { $0.kind.location == .implicitMemory || $0.kind.name.hasSuffix("_reg_mem") }
        let sanctioned = form.classes.contains(.string) || form.mnemonic.contains("maskmov")
        if implicitMemory && !sanctioned { return "an implicit memory operand outside NaCl's rules" }
        if ["monitor", "monitorx", "umonitor", "clzero", "invlpga", "mwait", "mwaitx"].contains(form.mnemonic) {
            return "an implicit memory operand addressed by a register outside NaCl's rules"
        }
        return nil
    }
}
