import Analysis
import ArgumentParser
import Policy
import Verifier
import X86

struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Parse, lint and resolve a policy, summarise what it accepts, and decide whether it still computes.",
        discussion: """
            Reads POLICY and its `extends` chain, reports every error as file:line:col with the \
            source line, and lint findings as warnings: a ban without a reason, a sensitive group \
            (timers, cache-control, tsx, rng, user-wait, system) trusted without a reason, an allow \
            that re-admits a parent's referenced ban. Then prints the accepted set: forms per \
            extension and per group, and the sandbox model.

            Then the Turing-completeness verdict for the accepted subset under its sandbox model: \
            turing-complete (with a witness: a universal machine made only of accepted forms, laid \
            out to the model's rules and accepted by the policy's own verifier), weak (only a \
            counter machine in registers: memory does not scale), not-turing-complete (with the \
            negative lemma that proves it), or unknown (fail closed). Anything but turing-complete \
            lists the missing capabilities and the forms whose trust would give a witness. \
            --witness DIR writes the witness there: witness.bin (raw code, base 0), witness.s (an \
            annotated listing), layout.txt (the data it expects at %r15) and data.bin (an example), \
            each replaced whole or not at all (a temporary file beside it, synced, renamed).

            A policy file holds at most 1 MiB, nests at most 64 levels, uses no YAML anchors or \
            aliases, and extends at most 63 others; a missing or unreadable file is reported with \
            the system's reason (policies/README.md, Limits).

            Exit status: 0 clean and turing-complete, 1 lint findings or another verdict, 2 errors.
            """)

    @Argument(help: "The policy file (YAML).")
    var policy: String

    @Option(help: "Output format: text or json.")
    var format: OutputFormat = .text

    @Flag(help: "Measure: load the instruction database, then read and resolve the policy and decide its Turing-completeness 20 times; print the medians.")
    var timing = false

    @Option(help: ArgumentHelp("Write the witness into this directory (created) when the verdict is turing-complete.", valueName: "DIR"))
    var witness: String?

    func run() throws {
        if timing { return try measure() }
        let resolved = try loadPolicy(policy)
        let database = ISADatabase.shared
        var counts: [AcceptedSet.Verdict: Int] = [:]
        var byExtension: [String: Int] = [:]
        var byGroup: [String: Int] = [:]
        for form in database.forms {
            let verdict = resolved.accepted.verdict(form.index)
            counts[verdict, default: 0] += 1
            guard verdict != .refused else { continue }
            for feature in form.cpuid { byExtension[feature, default: 0] += 1 }
            for group in GroupCatalog.builtins where group.contains(form) { byGroup[group.name, default: 0] += 1 }
        }
        let sandbox = resolved.sandbox
        let compiled = CompiledPolicy(resolved)
        // Forms the policy trusts that the sandbox model refuses whatever the policy says, by reason:
        // the model's default deny made visible ("the model has no rule for ...").
        var modelRefusals: [String: [String]] = [:]
        for form in database.forms where resolved.accepted.verdict(form.index) != .refused {
            let forbidden = Int(compiled.plans[form.index].forbidden)
            if forbidden > 0 { modelRefusals[compiled.refusals[forbidden - 1].reason, default: []].append(form.id) }
        }
        let turing = TuringChecker(compiled).check()
        if let directory = witness, let w = turing.witness, turing.verdict == .turingComplete {
            try failing { try writeWitness(w, to: directory) }
        }
        var out = StandardOutput()
        switch format {
        case .json:
            let json = JSON.object([
                "schema": .int(1),
                "policy": .object([
                    "name": .string(resolved.name), "file": .string(resolved.path),
                    "chain": .array(resolved.files.map { .string($0.path) }),
                ]),
                "sandbox": .object([
                    "model": .string(sandbox.model?.rawValue ?? "nacl-x86-64"), "bundle_size": .int(sandbox.bundleSize ?? 32),
                    "call_alignment": .string(sandbox.callAlignment?.rawValue ?? "warn"),
                ]),
                "accepted": .object([
                    "forms": .int(counts[.accepted, default: 0]), "partial": .int(counts[.partial, default: 0]),
                    "refused": .int(counts[.refused, default: 0]),
                    "by_extension": .object(byExtension.mapValues(JSON.int)), "by_group": .object(byGroup.mapValues(JSON.int)),
                ]),
                "model_refuses": .array(modelRefusals.sorted { $0.key < $1.key }.map { reason, forms in
                    JSON.object(["reason": .string(reason), "forms": .array(forms.map(JSON.string))])
                }),
                "warnings": .array(resolved.warnings.map(diagnosticJSON)),
                "turing": turingJSON(turing),
            ])
            print(json.compact, to: &out)
        case .text:
            print("\(resolved.name) (\(resolved.files.map(\.path).joined(separator: " -> ")))", to: &out)
            print("sandbox: \(sandbox.model?.rawValue ?? "nacl-x86-64"), \(sandbox.bundleSize ?? 32)-byte bundles, call alignment \(sandbox.callAlignment?.rawValue ?? "warn")", to: &out)
            if sandbox.model == SandboxSettings.Model.none {
                print("model none: a subset check only, not a safety proof", to: &out)
            }
            print("accepts \(counts[.accepted, default: 0]) forms wholly and \(counts[.partial, default: 0]) in part; refuses \(counts[.refused, default: 0])", to: &out)
            let refusedByModel = modelRefusals.values.reduce(0) { $0 + $1.count }
            if refusedByModel > 0 {
                print("the sandbox model refuses \(refusedByModel) of the trusted forms whatever the policy says:", to: &out)
                for (reason, forms) in modelRefusals.sorted(by: { $0.key < $1.key }) {
                    let shown = forms.prefix(6).joined(separator: " ") + (forms.count > 6 ? " and \(forms.count - 6) more" : "")
                    print("  \(reason): \(shown)", to: &out)
                }
            }
            print("by group:", to: &out)
            for (name, count) in byGroup.sorted(by: { $0.key < $1.key }) { print("  \(name): \(count)", to: &out) }
            print("by extension:", to: &out)
            for (name, count) in byExtension.sorted(by: { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }) {
                print("  \(name): \(count)", to: &out)
            }
            for line in turingText(turing) { print(line, to: &out) }
        }
        out.flush()
        try reportWarnings(resolved)
        if turing.verdict != .turingComplete { throw ExitStatus.findings }
    }

    private func reportWarnings(_ resolved: ResolvedPolicy) throws {
        if !resolved.warnings.isEmpty {
            var standardError = StandardError()
            printWarnings(resolved, to: &standardError)
            throw ExitStatus.findings
        }
    }

    /// The benchmark behind "resolving a shipped profile takes under 50 ms".
    private func measure() throws {
        let start = Clock.now()
        _ = ISADatabase.shared
        let database = Clock.now() - start
        var times: [Double] = [], turingTimes: [Double] = []
        for _ in 0..<20 {
            let t = Clock.now()
            let resolved = try loadPolicy(policy)
            times.append(Clock.now() - t)
            let u = Clock.now()
            _ = TuringChecker(CompiledPolicy(resolved)).check()
            turingTimes.append(Clock.now() - u)
        }
        let median = times.sorted()[times.count / 2]
        let turingMedian = turingTimes.sorted()[turingTimes.count / 2]
        var out = StandardOutput()
        if format == .json {
            print(JSON.object(["policy": .string(policy), "database_ms": .double(database * 1000),
                               "resolve_ms": .double(median * 1000), "turing_ms": .double(turingMedian * 1000),
                               "runs": .int(times.count)]).compact, to: &out)
        } else {
            print("database load: \(String(format3: database * 1000)) ms (once per process)", to: &out)
            print("read + resolve + lint \(policy): \(String(format3: median * 1000)) ms (median of \(times.count))", to: &out)
            print("compile + Turing-completeness verdict with its witness: \(String(format3: turingMedian * 1000)) ms (median of \(times.count))", to: &out)
        }
        out.flush()
    }
}
