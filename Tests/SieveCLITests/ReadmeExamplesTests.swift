import Foundation
import Testing

/// The documentation cannot drift: every command shown in README.md runs here, in order, in a
/// scratch copy of the repository's policies (with `../shared` beside it, as in the repository),
/// and what it prints is compared with what the README shows.
///
/// In a ```sh block, `$ COMMAND` lines (continued by a trailing `\` or a here-document) are
/// commands and the lines after them, up to the next command, their expected output (standard
/// output and standard error, as a terminal shows them). A line `...` stands for any number of
/// lines. Figures that vary from run to run (times, rates, 16-digit content hashes) are masked
/// on both sides. A block without `$` lines lists commands to run that must exit 0, output
/// unchecked: there, `Scripts/sieve` is the built binary and `Scripts/test` (this suite) is not run.
@Suite(.serialized) struct ReadmeExamplesTests {
    struct Example: CustomStringConvertible {
        let line: Int
        let command: String
        /// nil: only the exit status is checked (0).
        let expected: [String]?
        var description: String { "README line \(line): $ \(command)" }
    }

    static func examples(in markdown: String) -> [Example] {
        var examples: [Example] = []
        let lines = markdown.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var i = 0
        while i < lines.count {
            guard lines[i].hasPrefix("```sh") else { i += 1; continue }
            var block: [(Int, String)] = []
            i += 1
            while i < lines.count && !lines[i].hasPrefix("```") { block.append((i + 1, lines[i])); i += 1 }
            i += 1
            if !block.contains(where: { $0.1.hasPrefix("$ ") }) {
                for (number, text) in block {
                    let command = text.split(separator: "#", maxSplits: 1).first.map { String($0).trimmingCharacters(in: .whitespaces) } ?? ""
                    if !command.isEmpty { examples.append(Example(line: number, command: command, expected: nil)) }
                }
                continue
            }
            var k = 0
            while k < block.count {
                guard block[k].1.hasPrefix("$ ") else { k += 1; continue }
                let start = block[k].0
                var command = String(block[k].1.dropFirst(2))
                // A here-document runs to its terminator; a trailing backslash continues the line.
                if let range = command.range(of: #"<<'?(\w+)'?"#, options: .regularExpression) {
                    let terminator = command[range].trimmingCharacters(in: CharacterSet(charactersIn: "<'"))
                    repeat { k += 1; command += "\n" + block[k].1 } while block[k].1 != terminator
                }
                while command.hasSuffix("\\") { k += 1; command = String(command.dropLast()) + " " + block[k].1.trimmingCharacters(in: .whitespaces) }
                k += 1
                var expected: [String] = []
                while k < block.count && !block[k].1.hasPrefix("$ ") { expected.append(block[k].1); k += 1 }
                examples.append(Example(line: start, command: command, expected: expected))
            }
        }
        return examples
    }

    /// Times, rates and content hashes vary; the rest of a line must match.
    static func masked(_ line: String) -> String {
        var line = line
        for (pattern, replacement) in [(#"\b[0-9a-f]{16}\b"#, "<hash>"),
                                       (#"\d+(\.\d+)? ?(ms|s|MiB/s|MB/s|files/s)\b"#, "<time>")] {
            line = line.replacingOccurrences(of: pattern, with: replacement, options: .regularExpression)
        }
        return line.replacingOccurrences(of: #"\s+$"#, with: "", options: .regularExpression)
    }

    /// Whether `actual` is `expected` with each `...` line standing for any lines.
    static func matches(_ expected: ArraySlice<String>, _ actual: ArraySlice<String>) -> Bool {
        guard let first = expected.first else { return actual.isEmpty }
        if first.trimmingCharacters(in: .whitespaces) == "..." {
            return (actual.startIndex...actual.endIndex).contains { matches(expected.dropFirst(), actual[$0...]) }
        }
        guard let line = actual.first, masked(line) == masked(first) else { return false }
        return matches(expected.dropFirst(), actual.dropFirst())
    }

    /// A scratch directory laid out as the repository: `work/policies` (a copy) and `shared`.
    static func scratch() throws -> URL {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("sieve-readme-\(UUID().uuidString)")
        let work = root.appendingPathComponent("work")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: Sieve.packageRoot.appendingPathComponent("policies"),
                                         to: work.appendingPathComponent("policies"))
        try FileManager.default.createSymbolicLink(at: root.appendingPathComponent("shared"),
                                                   withDestinationURL: Sieve.corpus.deletingLastPathComponent())
        return work
    }

    /// A command through bash, standard error merged into standard output, `sieve` on the PATH.
    static func shell(_ command: String, in directory: URL) throws -> (status: Int32, output: String) {
        let path = Sieve.binary.deletingLastPathComponent().path + ":" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")
        let result = try Sieve.run(["-c", "exec 2>&1\n" + command], in: directory.path, environment: ["PATH": path], executable: "/bin/bash")
        return (result.status, result.stdout)
    }

    @Test(arguments: ["README.md", "policies/README.md"])
    func everyCommandShownPrintsWhatItShows(_ document: String) throws {
        let text = try String(contentsOf: Sieve.packageRoot.appendingPathComponent(document), encoding: .utf8)
        let work = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: work.deletingLastPathComponent()) }
        for example in Self.examples(in: text) {
            if example.command == "Scripts/test" { continue }   // this suite
            let command = example.command.replacingOccurrences(of: "Scripts/sieve ", with: "sieve ")
            let (status, output) = try Self.shell(command, in: work)
            guard let expected = example.expected else {
                #expect(status == 0, "\(example): exit \(status)\n\(output)")
                continue
            }
            var actual = output.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            if actual.last == "" { actual.removeLast() }
            #expect(Self.matches(expected[...], actual[...]),
                    "\(example)\n--- the README shows:\n\(expected.joined(separator: "\n"))\n--- it prints:\n\(actual.joined(separator: "\n"))")
        }
    }

    /// The format reference's example is a policy that loads (beside the shipped profiles).
    @Test func theFormatReferenceExampleLoads() throws {
        let text = try String(contentsOf: Sieve.packageRoot.appendingPathComponent("policies/README.md"), encoding: .utf8)
        let start = try #require(text.range(of: "```yaml\n"))
        let end = try #require(text.range(of: "```", range: start.upperBound..<text.endIndex))
        let work = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: work.deletingLastPathComponent()) }
        try String(text[start.upperBound..<end.lowerBound]).write(to: work.appendingPathComponent("policies/example.yaml"),
                                                                     atomically: true, encoding: .utf8)
        let (status, output) = try Self.shell("sieve check policies/example.yaml", in: work)
        #expect(status == 0 || status == 1, "\(output)")
        #expect(!output.contains("error"), "\(output)")
    }

    @Test func theParserFindsCommandsOutputsAndHereDocuments() {
        let markdown = """
            ```sh
            $ cat > a.yaml <<'EOF'
            x: 1
            EOF
            $ sieve a \\
                --b
            out 1
            ...
            ```
            ```sh
            Scripts/sieve verify x   # the main job
            ```
            """
        let examples = Self.examples(in: markdown)
        #expect(examples.map(\.command) == ["cat > a.yaml <<'EOF'\nx: 1\nEOF", "sieve a  --b", "Scripts/sieve verify x"])
        #expect(examples[0].expected == [])
        #expect(examples[1].expected == ["out 1", "..."])
        #expect(examples[2].expected == nil)
        #expect(Self.matches(["a", "...", "d"], ["a", "b", "c", "d"]))
        #expect(!Self.matches(["a", "...", "d"], ["a", "b", "c"]))
        #expect(Self.matches(["time 1.5 ms, hash 0123456789abcdef"], ["time 22.75 ms, hash fedcba9876543210"]))
    }
}
