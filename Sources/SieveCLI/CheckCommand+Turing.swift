import Analysis
import Verifier
import X86

/// The Turing-completeness part of `sieve check`: the verdict, and the witness on request.
extension CheckCommand {
    func turingJSON(_ report: TuringReport) -> JSON {
        .object([
            "verdict": .string(report.verdict.rawValue),
            "model": report.model.map { .string($0.rawValue) } ?? .null,
            "witness": report.witness.map { w in
                .object(["forms": .array(w.forms.map(JSON.string)), "bytes": .int(w.code.count)])
            } ?? .null,
            "missing": .array(report.missing.map(JSON.string)),
            "repair": .array(report.repair.map { .string($0.id) }),
            "lemma": report.lemma.map(JSON.string) ?? .null,
        ])
    }

    func turingText(_ report: TuringReport) -> [String] {
        var lines = ["turing: \(report.verdict.rawValue)" + (report.model.map { " (\($0.rawValue): \($0.summary))" } ?? "")]
        if let w = report.witness {
            lines.append("  witness: \(w.code.count) bytes; forms: \(w.forms.joined(separator: ", "))")
        }
        if let lemma = report.lemma { lines.append("  lemma: \(lemma)") }
        if !report.missing.isEmpty { lines.append("  missing: \(report.missing.joined(separator: ", "))") }
        for form in report.repair { lines.append("  repair: allow `\(form.instructionString)` (\(form.id))") }
        for (model, problem) in report.attempts where report.verdict != .turingComplete {
            lines.append("  tried \(model.rawValue): \(problem)")
        }
        return lines
    }

    /// Writes witness.bin, witness.s, layout.txt and an example input (data.bin) into `directory`:
    /// each file whole or not at all, none replaced unless all were written.
    func writeWitness(_ witness: Witness, to directory: String) throws {
        var files: [(name: String, bytes: [UInt8])] = [("witness.bin", witness.code), ("witness.s", Array(witness.listing.utf8))]
        var layout = witness.layout + "\n"
        if let example = witness.example {
            files.append(("data.bin", example.data))
            layout += "\ndata.bin (load it at %r15): \(example.description)\n"
        }
        files.append(("layout.txt", Array(layout.utf8)))
        try AtomicFile.write(files, into: directory)
    }
}
