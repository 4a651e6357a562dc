import SieveCore

/// A module of dynamic code (DESIGN §9): the core's region verification and replacement
/// validation (`dyncode.c`, the same C the generated verifier embeds) for one address range.
/// A JIT verifies each new bundle-aligned region before it turns executable, and validates a
/// replacement of verified code before copying it in with `Verifier.copyCode`. One writer at a
/// time: the runtime's code lock guards a module.
public final class CodeModule: @unchecked Sendable {
    public let verifier: Verifier
    public let base: UInt64
    public let size: UInt64
    private var module = sieve_module()
    private let loaded: UnsafeMutablePointer<UInt8>

    /// nil when [base, base + size) is not whole bundles.
    public init?(_ verifier: Verifier, base: UInt64, size: UInt64) {
        let bundle = UInt64(verifier.compiled.bundleSize)
        guard size > 0, size % bundle == 0, base % bundle == 0, base <= UInt64.max - (size - 1) else { return nil }
        self.verifier = verifier
        self.base = base
        self.size = size
        loaded = .allocate(capacity: Int((size / bundle + 7) / 8))
        let ok = verifier.withCoreTables { sieve_core_module_init($0, &module, base, size, loaded) }
        precondition(ok == 1, "the core refused a module the checks above accept")
    }

    deinit { loaded.deallocate() }

    /// Verifies new code for [address, address + code.count): whole bundles of the module not yet
    /// verified. Accepted: the region is verified code from now on.
    public func verifyRegion(_ code: [UInt8], at address: UInt64) -> VerificationReport {
        code.withUnsafeBytes { bytes in
            verifier.collect(bytes, base: address) { tables, report, ctx in
                sieve_core_verify_region(tables, &module, bytes.baseAddress!.assumingMemoryBound(to: UInt8.self), bytes.count,
                                         address, report, ctx)
            }
        }
    }

    /// Whether `new` may replace `old`, verified code at `address` (NaCl's rules for code
    /// replacement, stricter: boundaries and jump targets compared outright, and no instruction of
    /// a sanctioned sequence may change, not even a displacement). `old` must be the live code as
    /// the runtime reads it from its own mapping, never a copy the sandboxed side supplies.
    public func validateReplacement(old: [UInt8], new: [UInt8], at address: UInt64) -> VerificationReport {
        guard old.count == new.count else {
            return VerificationReport(findings: [Finding(.replacement, offset: 0, length: 0, form: nil, "the old and the new code differ in size")])
        }
        return old.withUnsafeBytes { oldBytes in
            new.withUnsafeBytes { newBytes in
                verifier.collect(newBytes, base: address) { tables, report, ctx in
                    sieve_core_validate_replacement(tables, &module, oldBytes.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                                    newBytes.baseAddress!.assumingMemoryBound(to: UInt8.self), newBytes.count,
                                                    address, report, ctx)
                }
            }
        }
    }
}

/// One instruction `Verifier.patch` found refused, and what became of it.
public struct PatchSite: Sendable, Equatable {
    public enum Outcome: Sendable, Equatable {
        /// Rewritten: by the policy's `rewrite` rule (its index in `ResolvedPolicy.rewrites`), or
        /// by the database's hint-free twin (nil).
        case rewritten(rule: Int?)
        /// Filled with HLT (`--stub-with-hlt`).
        case stubbed
        /// Nothing the policy accepts there: left as it was.
        case left
    }

    public let offset: Int
    public let formIndex: Int
    public let old: [UInt8]
    public let new: [UInt8]
    public let outcome: Outcome
}

extension Verifier {
    /// Runs a core entry point that reports findings about `code` (at `base`) and collects them.
    func collect(_ code: UnsafeRawBufferPointer, base: UInt64,
                 _ run: (UnsafePointer<sieve_tables>, sieve_report_fn, UnsafeMutableRawPointer) -> Int) -> VerificationReport {
        var report = VerificationReport()
        let stream = FindingStream(self, code, base: base, maxFindings: .max, tally: nil) { finding, isWarning in
            if isWarning { report.warnings.append(finding) } else { report.findings.append(finding) }
        }
        let count = withCoreTables { run($0, FindingStream.report, stream.context) }
        assert(count == report.findings.count, "the core's count and the reported findings differ")
        report.bytes = code.count
        return report
    }

    /// Copies `code`, which `CodeModule.validateReplacement` accepted, over `live` executable
    /// code (a writable mapping of it) so that a running thread never executes a partial
    /// instruction (`sieve_copy_code`). Returns the number of instructions changed, nil (nothing
    /// written) when the boundaries differ.
    public func copyCode(into live: UnsafeMutableRawBufferPointer, from code: [UInt8],
                         serialize: (@convention(c) (UnsafeMutableRawPointer?) -> Void)? = nil) -> Int? {
        guard live.count == code.count, let target = live.baseAddress else { return nil }
        let changed = code.withUnsafeBufferPointer { source in
            withCoreTables { sieve_core_copy($0, target.assumingMemoryBound(to: UInt8.self), source.baseAddress!, code.count, serialize, nil) }
        }
        return changed < 0 ? nil : changed
    }

    /// Rewrites every instruction of `code` (loaded at `base`) that the policy refuses into a
    /// same-length replacement the policy accepts where it stands (`sieve_patch`); with
    /// `stubWithHLT`, HLTs where none is. Returns every refused instruction and its fate, in
    /// offset order. Verify the result again: the patch leaves the model's findings alone.
    public func patch(_ code: inout [UInt8], base: UInt64, stubWithHLT: Bool) -> [PatchSite] {
        final class Sites {
            var list: [PatchSite] = []
            let original: [UInt8]
            init(_ original: [UInt8]) { self.original = original }
        }
        let sites = Sites(code)
        guard !code.isEmpty else { return [] }
        code.withUnsafeMutableBufferPointer { buffer in
            _ = withCoreTables { tables in
                sieve_core_patch(tables, buffer.baseAddress!, buffer.count, base, stubWithHLT ? 1 : 0, { raw, context in
                    let sites = Unmanaged<Sites>.fromOpaque(context!).takeUnretainedValue()
                    let s = raw!.pointee, offset = Int(s.offset), length = Int(s.length)
                    let outcome: PatchSite.Outcome = switch s.rule {
                    case -2: .stubbed
                    case -3: .left
                    case -1: .rewritten(rule: nil)
                    default: .rewritten(rule: Int(s.rule))
                    }
                    sites.list.append(PatchSite(offset: offset, formIndex: Int(s.form), old: Array(sites.original[offset..<offset + length]),
                                                new: Array(UnsafeBufferPointer(start: s.bytes, count: length)), outcome: outcome))
                }, Unmanaged.passUnretained(sites).toOpaque())
            }
        }
        return sites.list
    }
}
