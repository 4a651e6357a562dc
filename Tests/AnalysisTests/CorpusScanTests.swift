import Analysis
import Foundation
import Policy
import Synchronization
import Testing
import Verifier
import X86

@Suite struct CorpusScanTests {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path
    static let naclCorpus = packageRoot + "/../shared/corpus/nacl"

    /// This machine's 150 smallest ELF files: executables, shared libraries and object files
    /// (skipped: no LOAD segment), small enough for a debug build to verify in seconds.
    static let machineFiles: [String] = {
        let all = CorpusScan.elfFiles(under: ["/usr/bin", "/usr/lib/x86_64-linux-gnu"])
        // Sized by their targets: a small symlink may name a 60 MiB Go binary.
        let sizes = all.map {
            (try? FileManager.default.attributesOfItem(atPath: URL(fileURLWithPath: $0).resolvingSymlinksInPath().path)[.size] as? Int) ?? 0
        }
        return zip(all, sizes).sorted { ($0.1, $0.0) < ($1.1, $1.0) }.prefix(150).map(\.0).sorted()
    }()

    static func verifier(_ policy: String, model: SandboxSettings.Model? = nil) throws -> Verifier {
        Verifier(CompiledPolicy(try PolicyLoader.load(policy), model: model))
    }

    static func temporaryDirectory() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sieve-scan-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    @Test func scansTheMachinesFilesInModelNone() throws {
        let files = Self.machineFiles
        #expect(files.count >= 100)
        #expect(files == files.sorted() && Set(files).count == files.count)
        let verifier = try Self.verifier(Self.packageRoot + "/policies/standard.yaml", model: SandboxSettings.Model.none)
        // Progress comes from the workers' threads: count there, check here.
        let progress = ProgressCalls()
        let results = CorpusScan.run(verifier, files: files, workers: 2) { [count = files.count] done, total in
            progress.calls.add(1, ordering: .relaxed)
            if !(1...count).contains(done) || total != count { progress.wrong.add(1, ordering: .relaxed) }
        }
        #expect(progress.calls.load(ordering: .relaxed) == files.count && progress.wrong.load(ordering: .relaxed) == 0)
        #expect(results.map(\.path) == files)
        let verified = results.filter { $0.error == nil }
        #expect(verified.count >= 100, "\(results.compactMap(\.error).prefix(5))")
        #expect(verified.allSatisfy { $0.instructions > 0 && $0.bytes > 0 })
        for result in results where result.error != nil {
            #expect(result.instructions == 0 && result.sites.isEmpty && !result.accepted)
        }
        for site in results.flatMap(\.sites) {
            #expect(!site.bytes.isEmpty && site.bytes.count <= 15)
            #expect(site.formIndex != nil || site.kind == .invalid)
        }

        let forms = CorpusScan.formCounts(results)
        #expect(!forms.isEmpty)
        #expect(forms.reduce(0) { $0 + $1.count } == results.reduce(0) { $0 + $1.sites.count })
        #expect(zip(forms, forms.dropFirst()).allSatisfy { $0.count > $1.count || $0.count == $1.count && $0.form < $1.form })
        let ids = Set(ISADatabase.shared.forms.map(\.id)).union(["invalid"])
        #expect(forms.allSatisfy { ids.contains($0.form) })
    }

    @Test func resultsDoNotDependOnTheNumberOfWorkers() throws {
        // Large files among small ones: workers finish out of order.
        // (A few dozen files make the point; the 100-file scan above covers breadth.)
        let files = Array(Self.machineFiles.prefix(24)) + CorpusScan.elfFiles(under: [Self.naclCorpus])
        let verifier = try Self.verifier(Self.packageRoot + "/policies/standard.yaml", model: SandboxSettings.Model.none)
        let one = CorpusScan.run(verifier, files: files, workers: 1)
        #expect(one.count == files.count)
        #expect(one == CorpusScan.run(verifier, files: files, workers: 2))
        #expect(one == CorpusScan.run(verifier, files: files, workers: 5))
        #expect(CorpusScan.formCounts(one).map { "\($0.form) \($0.count)" }
                == CorpusScan.formCounts(CorpusScan.run(verifier, files: files)).map { "\($0.form) \($0.count)" })
    }

    @Test func naclProfileAcceptsTheNaClCorpus() throws {
        let files = CorpusScan.elfFiles(under: [Self.naclCorpus])
        #expect(files.map { URL(fileURLWithPath: $0).lastPathComponent } == ["x64_fib_array_v2.nexe", "x64_hello_world.nexe"])
        let results = CorpusScan.run(try Self.verifier(Self.packageRoot + "/policies/nacl.yaml"), files: files)
        #expect(results.allSatisfy { $0.accepted })
        #expect(results.map(\.instructions) == [40267, 6766])
        #expect(CorpusScan.formCounts(results).isEmpty)
    }

    @Test func banningNonTemporalFindsTheirSites() throws {
        let policy = try Self.temporaryDirectory() + "/no-nt.yaml"
        try """
            sieve: 1
            name: nacl without non-temporal hints
            extends: \(Self.packageRoot)/policies/nacl.yaml
            ban:
              - class: non-temporal
                reason: cache-bypassing stores hammer DRAM rows
                refs: [CVE-2015-0565]
            """.write(toFile: policy, atomically: true, encoding: .utf8)
        let files = CorpusScan.elfFiles(under: [Self.naclCorpus])
        #expect(files.count == 2)
        let results = CorpusScan.run(try Self.verifier(policy), files: files)
        let forms = ISADatabase.shared.forms
        for result in results {
            #expect(result.error == nil && !result.accepted)
            #expect(result.sites.count == 34, "\(result.path)")
            let mnemonics = result.sites.map { forms[$0.formIndex!].mnemonic }
            #expect(mnemonics.filter { $0 == "movnti" }.count == 32)
            #expect(mnemonics.filter { $0 == "prefetchnta" }.count == 2)
            #expect(result.sites.allSatisfy { $0.kind == .banned && $0.ruleIndex != nil && $0.message == "refused by the policy" })
            #expect(zip(result.sites, result.sites.dropFirst()).allSatisfy { $0.segment != $1.segment || $0.offset < $1.offset })

            // Each site's bytes and address are the file's: decode them again from the segment.
            let segments = try ELF.executableSegments(try #require(FileBytes.read(result.path)))
            for site in result.sites {
                let segment = try #require(segments.first { $0.name == site.segment })
                #expect(site.address == segment.virtualAddress + UInt64(site.offset))
                #expect(Array(segment.bytes[site.offset..<site.offset + site.bytes.count]) == site.bytes)
                guard case .instruction(let insn) = Decoder.shared.decode(site.bytes) else {
                    Issue.record("\(Hex.string(site.bytes)) does not decode")
                    continue
                }
                #expect(insn.formIndex == site.formIndex && insn.length == site.bytes.count)
            }
        }
        #expect(CorpusScan.formCounts(results).map { "\($0.form) \($0.count)" } == ["movnti_m64_r64 64", "prefetchnta_m8 4"])
    }

    @Test func nonELFFilesAreSkippedAndEachFileListedOnce() throws {
        let dir = try Self.temporaryDirectory()
        let nexe = Self.naclCorpus + "/x64_hello_world.nexe"
        let manager = FileManager.default
        try manager.createDirectory(atPath: dir + "/sub", withIntermediateDirectories: true)
        try manager.copyItem(atPath: nexe, toPath: dir + "/sub/hello.nexe")
        try "not code\n".write(toFile: dir + "/notes.txt", atomically: true, encoding: .utf8)
        try Data([0x7F, 0x45, 0x4C, 0x46, 2, 1]).write(to: URL(fileURLWithPath: dir + "/truncated.elf"))
        try manager.createSymbolicLink(atPath: dir + "/alias.nexe", withDestinationPath: dir + "/sub/hello.nexe")
        try manager.createSymbolicLink(atPath: dir + "/linked-corpus", withDestinationPath: Self.naclCorpus)

        // The symlink sorts first and names the file; the directory behind linked-corpus is not walked.
        let files = CorpusScan.elfFiles(under: [dir, dir + "/sub/hello.nexe", dir + "/notes.txt", dir + "/missing"])
        #expect(files == [dir + "/alias.nexe", dir + "/truncated.elf"])
        #expect(CorpusScan.elfFiles(under: [dir + "/linked-corpus"]).count == 2)
        #expect(CorpusScan.elfFiles(under: [dir], limit: 1) == [dir + "/alias.nexe"])
        #expect(CorpusScan.elfFiles(under: [dir + "/notes.txt"]).isEmpty)

        let verifier = try Self.verifier(Self.packageRoot + "/policies/nacl.yaml")
        let results = CorpusScan.run(verifier, files: files + [dir + "/notes.txt", dir + "/missing", dir + "/sub"])
        #expect(results.map(\.accepted) == [true, false, false, false, false])
        #expect(results[1].error?.contains("truncated ELF header") == true, "\(results[1].error ?? "")")
        #expect(results[2].error == "not an ELF file")
        #expect(results[3].error == "cannot read: No such file or directory")
        #expect(results[4].error == "cannot read: not a regular file")
        #expect(results.dropFirst().allSatisfy { $0.sites.isEmpty && $0.instructions == 0 })
    }
}

/// Progress calls seen, and those with a count out of range.
private final class ProgressCalls: Sendable {
    let calls = Atomic<Int>(0)
    let wrong = Atomic<Int>(0)
}
