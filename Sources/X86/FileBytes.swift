#if canImport(Glibc)
import Glibc
#endif

/// Whole files as bytes: code, policies and fixtures are all read this way.
public enum FileBytes {
    /// The bytes of the regular file at `path` (at most `maximum`, plus one byte to show it is
    /// longer), or nil when it cannot be opened or read, or is not a regular file.
    public static func read(_ path: String, maximum: Int = .max) -> [UInt8]? {
        var status = stat()
        guard stat(path, &status) == 0, status.st_mode & S_IFMT == S_IFREG, let file = fopen(path, "rb") else { return nil }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        // Sized once from the file's length: growing by doubling would hold two copies of a large
        // input for a moment (a file that grows while it is read still reads whole).
        if status.st_size > 0 { bytes.reserveCapacity(Int(min(Int64(status.st_size), Int64(min(maximum, Int.max - 1)))) + 1) }
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while bytes.count <= maximum {
            let n = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, file) }
            bytes.append(contentsOf: chunk[0..<n])
            if n < chunk.count { return ferror(file) == 0 ? bytes : nil }
        }
        return bytes
    }
}
