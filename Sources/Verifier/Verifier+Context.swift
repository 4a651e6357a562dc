extension Verifier {
    /// Code the model accepts around an instruction that it refuses on its own by a layout rule:
    /// the sanctioned sequences NaCl knows (the masked indirect branch, a zero-extended index, the
    /// %rsi/%rdi string sandboxing, `add %r15` after a %rsp/%rbp write), the instruction at every
    /// offset of two bundles of one-byte NOPs (so that a direct branch may land on an instruction
    /// start or on a bundle boundary outside the code). Nil when no such code makes the core accept
    /// it: then no surrounding code will (a branch into its own bytes, `mov %rax,%rsp`, RET).
    /// The policy's own bans are left aside: the question is the model's.
    public func sanctionedContext(for instruction: [UInt8]) -> SanctionedContext? {
        let area = 2 * compiled.bundleSize
        for context in SanctionedContext.candidates(bundleSize: compiled.bundleSize) {
            let body = context.before + instruction + context.after
            guard body.count <= area else { continue }
            for offset in 0...(area - body.count) {
                let code = [UInt8](repeating: 0x90, count: offset) + body + [UInt8](repeating: 0x90, count: area - offset - body.count)
                if verify(code, base: 0).findings.allSatisfy({ $0.kind == .banned }) { return context }
            }
        }
        return nil
    }
}

/// Instructions the model requires before and after another one.
public struct SanctionedContext: Sendable, Equatable {
    public let before: [UInt8]
    public let after: [UInt8]

    /// Nothing first, then each sequence alone, then with `add %r15,%rsp` or `%rbp` after.
    static func candidates(bundleSize: Int) -> [SanctionedContext] {
        let mask = UInt8(truncatingIfNeeded: -bundleSize)
        var before: [[UInt8]] = [[]]
        for r in 0..<15 {
            let b = UInt8(r >> 3), low = UInt8(r & 7)
            // and $~(bundle-1),%eXX; add %r15,%rXX
            before.append((b != 0 ? [0x41] : []) + [0x83, 0xe0 | low, mask] + [0x4c | b, 0x01, 0xf8 | low])
            // mov %eXX,%eXX: the register zero-extended, an index the next instruction may use
            before.append((b != 0 ? [0x45] : []) + [0x89, 0xc0 | low << 3 | low])
        }
        let rsi: [UInt8] = [0x89, 0xf6, 0x49, 0x8d, 0x34, 0x37]   // mov %esi,%esi; lea (%r15,%rsi),%rsi
        let rdi: [UInt8] = [0x89, 0xff, 0x49, 0x8d, 0x3c, 0x3f]   // mov %edi,%edi; lea (%r15,%rdi),%rdi
        before += [rsi, rdi, rsi + rdi]
        let after: [[UInt8]] = [[], [0x4c, 0x01, 0xfc], [0x4c, 0x01, 0xfd]]   // add %r15,%rsp / %rbp
        return after.flatMap { suffix in before.map { SanctionedContext(before: $0, after: suffix) } }
    }
}
