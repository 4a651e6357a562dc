import X86

#if canImport(Glibc)
import Glibc
#endif

/// Test data: files under `Tests/X86Tests/Fixtures`, the shared corpus beside the repository,
/// and binaries of this machine.
enum Fixture {
    static let directory: String = {
        var path = "\(#filePath)"
        while let last = path.lastIndex(of: "/"), !path.hasSuffix("/X86Tests") { path = String(path[..<last]) }
        return path + "/Fixtures"
    }()

    /// `../shared/corpus` beside the repository root.
    static let sharedCorpus: String = {
        var path = "\(#filePath)"
        for _ in 0..<4 { path = String(path[..<path.lastIndex(of: "/")!]) }
        return path + "/shared/corpus"
    }()

    static func text(_ name: String) throws -> String {
        String(decoding: try bytes(atPath: directory + "/" + name), as: UTF8.self)
    }

    struct Missing: Error { let path: String }

    static func bytes(atPath path: String) throws -> [UInt8] {
        guard let bytes = FileBytes.read(path) else { throw Missing(path: path) }
        return bytes
    }
}

extension Substring {
    func trimmingCharacters() -> String {
        String(drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }
}

extension Fixture {
    /// Re-records a golden file (only when a test is run with SIEVE_RECORD=1).
    static func write(_ name: String, _ text: String) throws {
        guard let file = fopen(directory + "/" + name, "wb") else { throw Missing(path: directory + "/" + name) }
        defer { fclose(file) }
        fputs(text, file)
    }
}
