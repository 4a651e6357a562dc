#if canImport(Glibc)
import Glibc
#endif

/// Runs a witness natively, the way a NaCl-style runtime would: %r15 points at a sandbox whose
/// low `dataSize` bytes hold the data and whose remaining 4 GiB are reserved and inaccessible (a
/// load there faults: the mov-only machine halts that way). The code runs in a child process,
/// between a harness entry stub (saves the callee-saved registers, sets %r15) and an exit stub
/// at the witness's end (saves %r8-%r13 to the top of the data, restores, returns). The
/// sandbox mapping is shared, so the parent reads what the witness left behind.
struct NativeRun {
    enum Ending: Equatable { case returned, faulted(Int32), timedOut }

    var ending: Ending
    var memory: [UInt8]
    /// %r8 ... %r13 at the exit stub.
    var registers: [UInt64]

    static let dataSize = 1 << 20
    static let registerSave = dataSize - 64
    static let reserved = (1 << 32) + (1 << 20)

    static func run(_ code: [UInt8], data: [UInt8], seconds: Double = 20) -> NativeRun {
        precondition(data.count <= registerSave)
        let sandbox = mmap(nil, reserved, PROT_NONE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)!
        precondition(sandbox != MAP_FAILED)
        defer { munmap(sandbox, reserved) }
        precondition(mprotect(sandbox, dataSize, PROT_READ | PROT_WRITE) == 0)
        data.withUnsafeBytes { sandbox.copyMemory(from: $0.baseAddress!, byteCount: data.count) }

        // Entry stub, the witness at offset 64, the exit stub right after it.
        var entry: [UInt8] = [0x53, 0x55, 0x41, 0x54, 0x41, 0x55, 0x41, 0x56, 0x41, 0x57, 0x49, 0x89, 0xFF]
        let witnessStart = 64
        entry += [0xE9] + le32(witnessStart - (entry.count + 5))
        var image = entry + [UInt8](repeating: 0xF4, count: witnessStart - entry.count) + code
        for (k, modrm) in [0x87, 0x8F, 0x97, 0x9F, 0xA7, 0xAF].enumerated() {
            image += [0x4D, 0x89, UInt8(modrm)] + le32(registerSave + 8 * k)  // mov %r8+k, save(%r15)
        }
        image += [0x41, 0x5F, 0x41, 0x5E, 0x41, 0x5D, 0x41, 0x5C, 0x5D, 0x5B, 0xC3]
        let pageSize = 4096, codeSize = (image.count + pageSize - 1) / pageSize * pageSize
        let text = mmap(nil, codeSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)!
        precondition(text != MAP_FAILED)
        defer { munmap(text, codeSize) }
        image.withUnsafeBytes { text.copyMemory(from: $0.baseAddress!, byteCount: image.count) }
        precondition(mprotect(text, codeSize, PROT_READ | PROT_EXEC) == 0)
        typealias Entry = @convention(c) (UnsafeMutableRawPointer) -> Void
        let function = unsafeBitCast(text, to: Entry.self)

        let child = fork()
        if child == 0 {
            // the fault is an ending, not a crash: the runtime's backtracer stays out of the child
            signal(SIGSEGV, SIG_DFL); signal(SIGBUS, SIG_DFL); signal(SIGILL, SIG_DFL); signal(SIGTRAP, SIG_DFL)
            function(sandbox)
            _exit(0)
        }
        var status: Int32 = 0
        var ending = Ending.timedOut
        let deadline = now() + seconds
        while now() < deadline {
            let done = waitpid(child, &status, WNOHANG)
            if done == child {
                let signal = status & 0x7F
                ending = signal == 0 ? .returned : .faulted(signal)
                break
            }
            usleep(1000)
        }
        if ending == .timedOut { kill(child, SIGKILL); waitpid(child, &status, 0) }
        let memory = Array(UnsafeRawBufferPointer(start: sandbox, count: dataSize))
        let registers = (0..<6).map { k in
            (0..<8).reduce(UInt64(0)) { $0 | UInt64(memory[registerSave + 8 * k + $1]) << (8 * UInt64($1)) }
        }
        return NativeRun(ending: ending, memory: memory, registers: registers)
    }

    static func le32(_ v: Int) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }

    static func now() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
    }

    func word64(_ index: Int) -> Int64 {
        Int64(bitPattern: (0..<8).reduce(UInt64(0)) { $0 | UInt64(memory[8 * index + $1]) << (8 * UInt64($1)) })
    }

    func word32(at offset: Int) -> UInt32 {
        (0..<4).reduce(UInt32(0)) { $0 | UInt32(memory[offset + $1]) << (8 * UInt32($1)) }
    }
}
