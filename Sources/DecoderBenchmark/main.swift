// Decoder throughput on real code: Sieve's strict decoder, Zydis 4.0 and capstone 4.0.2, each a
// linear sweep that skips one byte where it finds no instruction. Median of repeated passes.
//
//   swift run -c release DecoderBenchmark [--passes N] [--json] FILE...
//
// Each FILE is an ELF64 file (its .text is used) or raw code.
import CCapstone
import CZydis
import X86

#if canImport(Glibc)
import Glibc
#endif

func now() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
}

func readAll(_ path: String) -> [UInt8] {
    guard let bytes = FileBytes.read(path) else { fatalError("cannot read \(path)") }
    return bytes
}

/// Runs `sweep` `passes` times; returns the median seconds and the count it reports.
func measure(_ passes: Int, _ sweep: () -> Int) -> (seconds: Double, count: Int) {
    var times: [Double] = []
    var count = 0
    for _ in 0..<passes {
        let start = now()
        count = sweep()
        times.append(now() - start)
    }
    return (times.sorted()[times.count / 2], count)
}

var arguments = Array(CommandLine.arguments.dropFirst())
var passes = 7
var json = false
if let k = arguments.firstIndex(of: "--passes") { passes = Int(arguments[k + 1])!; arguments.removeSubrange(k...k + 1) }
if let k = arguments.firstIndex(of: "--json") { json = true; arguments.remove(at: k) }
guard !arguments.isEmpty else {
    print("usage: DecoderBenchmark [--passes N] [--json] FILE...")
    exit(2)
}

var code: [UInt8] = []
for path in arguments {
    let bytes = readAll(path)
    if ELF.isELF(bytes), let text = try? ELF.section(named: ".text", in: bytes) { code += text.bytes } else { code += bytes }
}

let decoder = Decoder.shared
let sieve = measure(passes) {
    code.withUnsafeBytes { buffer in
        var offset = 0, count = 0
        while offset < buffer.count {
            if case .instruction(let insn) = decoder.decode(buffer, at: offset) {
                offset += insn.length; count += 1
            } else {
                offset += 1
            }
        }
        return count
    }
}

var zydisDecoder = sieve_zydis()
sieve_zydis_init(&zydisDecoder)
let zydis = measure(passes) {
    code.withUnsafeBufferPointer { buffer in
        var offset = 0, count = 0
        while offset < buffer.count {
            let n = Int(sieve_zydis_length(&zydisDecoder, buffer.baseAddress! + offset, buffer.count - offset, nil))
            if n > 0 { offset += n; count += 1 } else { offset += 1 }
        }
        return count
    }
}

var handle: csh = 0
_ = cs_open(CS_ARCH_X86, CS_MODE_64, &handle)
let insn = cs_malloc(handle)
let capstone = measure(max(1, passes / 2)) {
    code.withUnsafeBufferPointer { buffer in
        var offset = 0, count = 0
        while offset < buffer.count {
            var p: UnsafePointer<UInt8>? = buffer.baseAddress! + offset
            var size = buffer.count - offset
            var address: UInt64 = UInt64(offset)
            if cs_disasm_iter(handle, &p, &size, &address, insn) {
                offset += Int(insn!.pointee.size); count += 1
            } else {
                offset += 1
            }
        }
        return count
    }
}

let megabytes = Double(code.count) / 1e6
let rows = [("sieve", sieve), ("zydis", zydis), ("capstone", capstone)]
if json {
    let fields = rows.map { name, r in
        "\"\(name)\":{\"instructions\":\(r.count),\"mb_per_s\":\(Int(megabytes / r.seconds)),\"seconds\":\(r.seconds)}"
    }
    print("{\"bytes\":\(code.count),\"passes\":\(passes),\(fields.joined(separator: ","))}")
} else {
    print("code: \(code.count) bytes from \(arguments.count) file(s), median of \(passes) passes (capstone \(max(1, passes / 2)))")
    for (name, r) in rows {
        let mbps = megabytes / r.seconds
        let padded = name + String(repeating: " ", count: 10 - name.count)
        print("\(padded) \(String(Int(mbps.rounded()))) MB/s   \(r.count) instructions   \(Int((Double(r.count) / r.seconds / 1e6).rounded())) M insn/s")
    }
}
