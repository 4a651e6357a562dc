import Dispatch
import Policy
import SieveCore
import X86

/// The verifier: the trusted C core (`SieveCore`) run on the compiled policy's tables, built in
/// memory. The same core, with the same tables printed as C, is what `sieve generate` writes: the
/// sandbox rules exist once. Swift adds only the words: each finding's message, from the core's
/// kind, rule and reason, and the decoder's reason for bytes it refuses.
///
/// Deliberately stricter than NaCl where NaCl trusts an implicit operand: implicit writes to
/// %rbp (LEAVE, ENTER) and to %rsp outside the stack engine are refused, as are RET and every
/// instruction with an implicit memory operand outside the string sequences.
public struct Verifier: Sendable {
    public let compiled: CompiledPolicy
    public let decoder: Decoder
    let storage: CoreTableStorage

    /// `fastPath: false` makes the core take every instruction through its full decode and check
    /// (the tests compare the two).
    public init(_ compiled: CompiledPolicy, decoder: Decoder = .shared, fastPath: Bool = true) {
        self.compiled = compiled
        self.decoder = decoder
        storage = CoreTableStorage(CoreTables(compiled, decoder: decoder), fullPathOnly: !fastPath)
    }

    public var tables: CoreTables { storage.tables }

    /// Runs `body` with the core's tables as the core reads them.
    public func withCoreTables<R>(_ body: (UnsafePointer<sieve_tables>) throws -> R) rethrows -> R {
        try withExtendedLifetime(storage) { try withUnsafePointer(to: storage.root, body) }
    }

    public func verify(_ bytes: [UInt8], base: UInt64 = 0) -> VerificationReport {
        bytes.withUnsafeBytes { verify($0, base: base) }
    }

    /// Every finding and warning, collected and sorted by offset. Memory grows with the number of
    /// findings (random bytes give one every few bytes): for input of unknown size use the
    /// streaming `verify(_:base:maxFindings:onFinding:)`.
    public func verify(_ code: UnsafeRawBufferPointer, base: UInt64) -> VerificationReport {
        var report = VerificationReport()
        let counts = verify(code, base: base, maxFindings: .max) { finding, isWarning in
            if isWarning { report.warnings.append(finding) } else { report.findings.append(finding) }
        }
        report.bytes = counts.bytes
        report.instructions = counts.instructions
        report.findings.sort { ($0.offset, $0.kind) < ($1.offset, $1.kind) }
        return report
    }

    /// Verifies `code`, passing each finding (`isWarning` false) and warning (true) to `onFinding`
    /// as the core reports them, at most `maxFindings` of each; the rest are only counted, and
    /// `tally` (when given) sees the kind and form of every finding, listed or not. Memory does not
    /// grow with the input beyond the core's own O(size) marks, whatever the number of findings.
    ///
    /// The order is the core's: its sweep in offset order, then the jump targets it checks once
    /// every instruction start is known (bad-jump-target findings come last). The counts are
    /// complete: a verdict never depends on the cap.
    ///
    /// `threads` above 1 verifies pieces of whole bundles on that many threads and joins them
    /// (`sieve_core_split`, `sieve_core_verify_piece`, `sieve_core_judge_piece`, `sieve_core_join`): the same findings in
    /// the same order as one thread.
    public func verify(_ code: UnsafeRawBufferPointer, base: UInt64, maxFindings: Int, threads: Int = 1,
                       tally: ((FindingKind, _ formIndex: Int?) -> Void)? = nil,
                       onFinding: (Finding, _ isWarning: Bool) -> Void) -> VerificationCounts {
        withoutActuallyEscaping(onFinding) { onFinding in
            withoutActuallyEscaping(tally ?? { _, _ in }) { tallyAll in
                let stream = FindingStream(self, code, base: base, maxFindings: max(0, maxFindings),
                                           tally: tally == nil ? nil : tallyAll, onFinding)
                var instructions = 0
                // The core reads through the buffer's base address: give empty code one too.
                let byte: UInt8 = 0
                let findings = withExtendedLifetime(storage) {
                    withUnsafePointer(to: byte) { empty in
                        let start = code.baseAddress?.assumingMemoryBound(to: UInt8.self) ?? empty
                        return withUnsafePointer(to: storage.root) { tables in
                            guard threads > 1 else {
                                return sieve_core_run(tables, start, code.count, base, nil, FindingStream.report, stream.context, &instructions)
                            }
                            return Self.inPieces(tables, start, code.count, base, threads: threads, FindingStream.report, stream.context,
                                                 &instructions)
                        }
                    }
                }
                var counts = stream.counts
                assert(counts.findings == findings, "the core's count and the reported findings differ")
                counts.instructions = instructions
                counts.bytes = code.count
                return counts
            }
        }
    }

    /// One module in pieces: four per thread (so that a slow piece does not hold the others up;
    /// the core makes fewer of small code), verified concurrently, joined in one thread's order.
    static func inPieces(_ tables: UnsafePointer<sieve_tables>, _ code: UnsafePointer<UInt8>, _ size: Int, _ base: UInt64,
                         threads: Int, _ report: sieve_report_fn, _ context: UnsafeMutableRawPointer,
                         _ instructions: inout Int) -> Int {
        let wanted = min(threads, 4096) * 4
        var pieces = [sieve_piece](repeating: sieve_piece(), count: wanted)
        let count = sieve_core_split(tables, size, base, &pieces, wanted)
        // Each thread writes its own piece and reads the tables and the code, which nobody writes.
        struct Shared: @unchecked Sendable {
            let tables: UnsafePointer<sieve_tables>, code: UnsafePointer<UInt8>, pieces: UnsafeMutablePointer<sieve_piece>
        }
        pieces.withUnsafeMutableBufferPointer { buffer in
            let shared = Shared(tables: tables, code: code, pieces: buffer.baseAddress!)
            DispatchQueue.concurrentPerform(iterations: count) { k in
                sieve_core_verify_piece(shared.tables, shared.code, size, base, shared.pieces + k)
            }
            // Then each piece's jumps on the module (work only where code is refused): reads every piece, writes its own.
            DispatchQueue.concurrentPerform(iterations: count) { k in
                sieve_core_judge_piece(shared.tables, shared.code, size, base, shared.pieces, count, k)
            }
        }
        instructions = pieces.prefix(count).reduce(0) { $0 + $1.instructions }
        return sieve_core_join(tables, code, size, base, &pieces, count, report, context)
    }

    /// The core's report callback's context: turns raw findings into `Finding`s up to the cap.
    final class FindingStream {
        let verifier: Verifier
        let code: UnsafeRawBufferPointer
        let base: UInt64
        let maxFindings: Int
        let tally: ((FindingKind, Int?) -> Void)?
        let onFinding: (Finding, Bool) -> Void
        var counts = VerificationCounts()

        /// The core's report callback, and the context it takes: this stream.
        static let report: sieve_report_fn = { finding, context in
            Unmanaged<FindingStream>.fromOpaque(context!).takeUnretainedValue().take(finding!.pointee)
        }
        var context: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }

        init(_ verifier: Verifier, _ code: UnsafeRawBufferPointer, base: UInt64, maxFindings: Int,
             tally: ((FindingKind, Int?) -> Void)?, _ onFinding: @escaping (Finding, Bool) -> Void) {
            self.verifier = verifier
            self.code = code
            self.base = base
            self.maxFindings = maxFindings
            self.tally = tally
            self.onFinding = onFinding
        }

        func take(_ raw: sieve_finding) {
            if raw.warning != 0 {
                counts.warnings += 1
                guard counts.listedWarnings < maxFindings else { return }
                counts.listedWarnings += 1
                onFinding(verifier.finding(raw, code, base: base), true)
            } else {
                counts.findings += 1
                if let tally { tally(FindingKind.allCases[Int(raw.kind)], raw.form >= 0 ? Int(raw.form) : nil) }
                guard counts.listedFindings < maxFindings else { return }
                counts.listedFindings += 1
                onFinding(verifier.finding(raw, code, base: base), false)
            }
        }
    }

    /// A core finding in words.
    func finding(_ raw: sieve_finding, _ code: UnsafeRawBufferPointer, base: UInt64) -> Finding {
        let kind = FindingKind.allCases[Int(raw.kind)]
        let offset = Int(raw.offset), length = Int(raw.length)
        let form: Int? = raw.form >= 0 ? Int(raw.form) : nil
        let rule: Int? = raw.rule >= 0 ? Int(raw.rule) : nil
        return Finding(kind, offset: offset, length: length, form: form, message(kind, raw, code, offset: offset, base: base), rule: rule)
    }

    func message(_ kind: FindingKind, _ raw: sieve_finding, _ code: UnsafeRawBufferPointer, offset: Int, base: UInt64) -> String {
        if raw.reason >= 0 && Int(raw.reason) < compiled.refusals.count { return compiled.refusals[Int(raw.reason)].reason }
        let bundle = compiled.bundleSize
        switch kind {
        case .banned:
            return raw.rule >= 0 ? "refused by the policy" : "not trusted by the policy"
        case .invalid:
            guard offset < code.count, let start = code.baseAddress else { return "not enough memory to verify the code" }
            var insn = Instruction()
            let bytes = start.assumingMemoryBound(to: UInt8.self) + offset
            return decoder.decode(bytes, available: code.count - offset, into: &insn)?.rawValue
                ?? insn.refusal?.rawValue ?? "refused by the decoder"
        case .sandboxForbidden:
            return "a prefix the model refuses: FS/GS overrides and 0x67 reach outside the sandbox, NaCl accepts prefixes the instruction ignores only in its NOP strings, and a string instruction takes only a REX.W that sizes it and a REPNE only on CMPS or SCAS"
        case .bundleCrossing:
            return "the instruction crosses the \(bundle)-byte bundle boundary"
        case .badJumpTarget:
            return "the target is not an instruction start a jump may land on, nor a bundle-aligned address outside the code"
        case .unsafeIndirectBranch:
            return "an indirect branch outside the masked sequence and $~\(bundle - 1),%eXX; add %r15,%rXX"
        case .reservedRegisterWrite:
            return "writes %r15, the sandbox base"
        case .stackPointerWrite:
            return "writes %rsp or %rbp outside the sanctioned sequences, or leaves one zero-extended without the add %r15 that must follow"
        case .unsafeMemoryOperand:
            return "a memory operand whose base is not %r15, %rsp, %rbp or %rip"
        case .unrestrictedIndex:
            return "an index register not zero-extended by the instruction just before"
        case .stringOutsideSequence:
            return "a string instruction outside its %rsi/%rdi sandboxing sequence"
        case .callAlignment:
            return "the call does not end at a bundle end, so its return address is not bundle-aligned"
        case .layout:
            return raw.length == 0 && raw.offset == 0 && base & UInt64(bundle - 1) == 0
                ? "the region is not whole bundles of its module that hold no verified code (a replacement: that hold verified code)"
                : "the code starts at 0x\(String(base, radix: 16)), not on a \(bundle)-byte bundle boundary"
        case .replacement:
            return raw.length == 0
                ? (raw.offset == 0 ? "the old code does not verify where it stands, or the jump targets change" : "the jump targets change")
                : "changes what a replacement may not: an instruction boundary, a sanctioned sequence, a form that is not modifiable, or bytes besides its immediate, displacement or branch offset"
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
