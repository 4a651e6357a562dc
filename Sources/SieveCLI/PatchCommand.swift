#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import ArgumentParser
import Policy
import Verifier
import X86

struct PatchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "patch",
        abstract: "Rewrite the instructions a policy refuses into same-length replacements it accepts.",
        discussion: """
            After an erratum, code already deployed must change without being rebuilt. For each \
            instruction of each FILE's executable segments that POLICY refuses, patch puts in place \
            a replacement of the same total length that the policy accepts where it stands and that \
            keeps every boundary other code depends on (NaCl's loader did the same for five \
            instructions after the Rowhammer ban):

              - from the instruction database, where the replacement has the same semantics but a \
            hint: a non-temporal move becomes its temporal twin (movnti -> mov + nop, movntdq -> \
            movdqa, movntps -> movaps, ...), a prefetch becomes NOPs;
              - from the policy's `rewrite:` rules otherwise ({mnemonic: clflush, to: nop, reason: \
            ..., refs: [...]}: `to` is nop, a form id or a mnemonic with the same operands);
              - with --stub-with-hlt, HLTs where nothing else is accepted (the code traps there).

            A shorter re-encoding is padded with NOPs after it when it uses an index register (it \
            must stay right after the instruction that restricts that register), before it \
            otherwise (its end stays, so a RIP-relative displacement and branch targets keep their \
            meaning). Each bundle with a site is verified again, and a patch that is not accepted \
            there is undone (the site is "left").

            Only code bytes change: an ELF file's output is the same file with its executable \
            segments patched. The output is verified again under POLICY and the report says so. \
            Every refused instruction is listed: its address, old and new bytes, and the rule \
            (the database's twin, the policy's rewrite rule with file:line, reason and refs, or \
            HLT). Outputs are written whole or not at all: with one FILE, OUT is the output file \
            (or a directory to write it into); with several, OUT is a directory, each output named \
            as its input.

            Exit status: 0 every output verifies under POLICY, 1 some output still has findings \
            (it is written all the same, so that you can see them with `sieve verify`), 2 an \
            input or output error.
            """)

    @Option(name: .shortAndLong, help: "The policy file.")
    var policy: String

    @Argument(help: "ELF64 files, or raw code with --raw.")
    var files: [String]

    @Option(name: .shortAndLong, help: "The output file (one FILE) or directory.")
    var output: String

    @Flag(help: "Fill the refused instructions that have no accepted replacement with HLT.")
    var stubWithHlt = false

    @Flag(help: "Treat the files as raw code.")
    var raw = false

    @Option(help: "With --raw: virtual address of the first byte (hex with 0x, or decimal; default 0).", transform: parseAddress)
    var base: UInt64?

    @Option(help: "Output format: text or json.")
    var format: OutputFormat = .text

    func validate() throws {
        if base != nil && !raw {
            throw ValidationError("--base applies to raw code (--raw): an ELF file's segments carry their own addresses")
        }
        let names = files.map { AtomicFile.split($0).name }
        if files.count > 1, let twice = Dictionary(grouping: names, by: { $0 }).first(where: { $0.value.count > 1 })?.key {
            throw ValidationError("two inputs are named \(twice): their outputs in \(output) would collide")
        }
    }

    func run() throws {
        let resolved = try loadPolicy(policy)
        let compiled = CompiledPolicy(resolved)
        let verifier = Verifier(compiled)
        // Every input read and patched before any output is written; the outputs all or none.
        // OUT itself for one FILE (OUT/NAME when OUT is a directory); OUT/NAME for several.
        var status = stat()
        let intoDirectory = files.count > 1 || (stat(output, &status) == 0 && status.st_mode & S_IFMT == S_IFDIR)
        let patched = try failing {
            try files.map { file in
                let bytes = try readFile(file)
                let segments = try CodeInput.segments(of: file, bytes: bytes, raw: raw, base: base ?? 0)
                return FilePatch.make(file, bytes, segments, verifier, stubWithHLT: stubWithHlt, output: intoDirectory ? output + "/" + AtomicFile.split(file).name : output)
            }
        }
        try failing {
            let staged = StagedFiles()
            if files.count > 1 { try makeDirectory(output) }
            for file in patched { try staged.stage(file.bytes, as: file.output, like: file.input) }
            try staged.commit()
        }

        var out = StandardOutput()
        if format == .json {
            print(JSON.object([
                "files": .array(patched.map { $0.json(compiled) }),
                "policy": policyJSON(resolved, compiled),
                "schema": .int(1),
            ]).compact, to: &out)
        } else {
            for file in patched { file.printText(compiled, to: &out) }
        }
        out.flush()
        if patched.contains(where: { $0.findingsAfter > 0 }) { throw ExitStatus.findings }
    }

    /// One input, patched: its new bytes, the sites, and the verdict on the patched code.
    struct FilePatch {
        let input: String
        let output: String
        let bytes: [UInt8]
        let sites: [(segment: CodeSegment, site: PatchSite)]
        let findingsAfter: Int

        static func make(_ input: String, _ original: [UInt8], _ segments: [CodeSegment], _ verifier: Verifier,
                         stubWithHLT: Bool, output: String) -> FilePatch {
            var bytes = original, sites: [(CodeSegment, PatchSite)] = [], findings = 0
            for segment in segments {
                var code = segment.bytes
                sites += verifier.patch(&code, base: segment.virtualAddress, stubWithHLT: stubWithHLT).map { (segment, $0) }
                bytes.replaceSubrange(segment.fileOffset..<segment.fileOffset + code.count, with: code)
                findings += code.withUnsafeBytes { verifier.verify($0, base: segment.virtualAddress, maxFindings: 0) { _, _ in } }.findings
            }
            return FilePatch(input: input, output: output, bytes: bytes, sites: sites, findingsAfter: findings)
        }

        var counts: (rewritten: Int, stubbed: Int, left: Int) {
            sites.reduce((0, 0, 0)) { c, s in
                switch s.site.outcome {
                case .rewritten: (c.0 + 1, c.1, c.2)
                case .stubbed: (c.0, c.1 + 1, c.2)
                case .left: (c.0, c.1, c.2 + 1)
                }
            }
        }

        func printText(_ compiled: CompiledPolicy, to out: inout StandardOutput) {
            let forms = compiled.database.forms
            for (segment, site) in sites {
                let address = segment.virtualAddress &+ UInt64(site.offset)
                print("\(input):0x\(String(address, radix: 16)): \(forms[site.formIndex].mnemonic) -> \(Self.becomes(site)) (\(Self.by(site, compiled)))", to: &out)
                print("    \(Hex.string(site.old))    ->    \(Hex.string(site.new))", to: &out)
            }
            let c = counts, s = sites.count == 1 ? "" : "s"
            let verdict = findingsAfter == 0 ? "accepted" : "refused (\(findingsAfter) finding\(findingsAfter == 1 ? "" : "s"); see sieve verify)"
            print("\(input) -> \(output): \(sites.count) refused instruction\(s): \(c.rewritten) rewritten, \(c.stubbed) stubbed with HLT, "
                  + "\(c.left) left; the patched code: \(verdict)", to: &out)
        }

        func json(_ compiled: CompiledPolicy) -> JSON {
            let forms = compiled.database.forms, c = counts
            return .object([
                "file": .string(input),
                "output": .string(output),
                "sites": .array(sites.map { segment, site in
                    let rule: JSON
                    if case .rewritten(let index?) = site.outcome {
                        let r = compiled.policy.rewrites[index]
                        rule = .object(["file": .string(r.file), "line": .int(r.mark.line), "column": .int(r.mark.column),
                                        "to": .string(r.to), "reason": .string(r.reason), "refs": .array(r.refs.map(JSON.string))])
                    } else {
                        rule = .null
                    }
                    return .object([
                        "offset": .int(site.offset),
                        "address": .int(Int(bitPattern: UInt(segment.virtualAddress &+ UInt64(site.offset)))),
                        "segment": .string(segment.name),
                        "file_offset": .int(segment.fileOffset + site.offset),
                        "form": .string(forms[site.formIndex].id),
                        "mnemonic": .string(forms[site.formIndex].mnemonic),
                        "old": .string(Hex.string(site.old, separator: "")),
                        "new": .string(Hex.string(site.new, separator: "")),
                        "becomes": .string(Self.becomes(site)),
                        "outcome": .string(Self.outcome(site)),
                        "by": .string(Self.by(site, compiled)),
                        "rule": rule,
                    ])
                }),
                "sites_total": .int(sites.count),
                "rewritten": .int(c.rewritten),
                "stubbed": .int(c.stubbed),
                "left": .int(c.left),
                "findings_after": .int(findingsAfter),
                "accepted": .bool(findingsAfter == 0),
            ])
        }

        static func outcome(_ site: PatchSite) -> String {
            switch site.outcome {
            case .rewritten: "rewritten"
            case .stubbed: "stubbed"
            case .left: "left"
            }
        }

        /// The new bytes as mnemonics: "mov + nop", "nop x5", "hlt x4".
        static func becomes(_ site: PatchSite) -> String {
            var names: [String] = [], at = 0
            while at < site.new.count {
                guard case .instruction(let insn) = Decoder.shared.decode(site.new, at: at) else { names.append("(bytes)"); break }
                names.append(ISADatabase.shared.forms[insn.formIndex].mnemonic)
                at += insn.length
            }
            if names.count > 1, Set(names).count == 1 { return "\(names[0]) x\(names.count)" }
            return names.joined(separator: " + ")
        }

        static func by(_ site: PatchSite, _ compiled: CompiledPolicy) -> String {
            switch site.outcome {
            case .rewritten(let rule?):
                let r = compiled.policy.rewrites[rule]
                return "rewrite at \(r.location): \(r.reason)" + (r.refs.isEmpty ? "" : " [\(r.refs.joined(separator: ", "))]")
            case .rewritten(nil): return "database: the same instruction without its hint"
            case .stubbed: return "--stub-with-hlt: no accepted replacement"
            case .left: return "no accepted replacement: left as it was"
            }
        }
    }
}
