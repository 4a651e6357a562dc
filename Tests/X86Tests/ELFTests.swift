import Foundation
import Testing
@testable import X86

// MARK: - Inputs

/// The shared corpus sits next to the package: <package root>/../shared/corpus/nacl.
private let naclCorpus: URL = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent()  // X86Tests
    .deletingLastPathComponent()  // Tests
    .deletingLastPathComponent()  // package root
    .deletingLastPathComponent()
    .appendingPathComponent("shared/corpus/nacl")

private let naclCorpusIsPresent = FileManager.default.fileExists(atPath: naclCorpus.path)
private let naclCorpusMissing: Comment = "NaCl corpus not found at <package root>/../shared/corpus/nacl"

private func naclFile(_ name: String) throws -> [UInt8] {
    let data = try #require(FileManager.default.contents(atPath: naclCorpus.appendingPathComponent(name).path),
                            "cannot read \(name) from \(naclCorpus.path)")
    return [UInt8](data)
}

/// Host binaries whose .text lies inside their executable LOAD segment.
private let systemBinaries = ["/bin/true", "/usr/bin/ls"].filter { path in
    guard let data = FileManager.default.contents(atPath: path) else { return false }
    return data.count > 19 && data[18] == 62 && data[19] == 0  // x86-64 host only
}

private extension Array where Element == UInt8 {
    /// Writes `value` little-endian at `offset`, growing the array with zeros if needed.
    mutating func store<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        let size = MemoryLayout<T>.size
        if count < offset + size { append(contentsOf: repeatElement(0, count: offset + size - count)) }
        for index in 0..<size { self[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index)) }
    }

    func load<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        (0..<MemoryLayout<T>.size).reduce(T(0)) { value, index in value | T(self[offset + index]) << (8 * index) }
    }
}

// MARK: - Small ELF files built field by field

private struct ProgramHeaderFields {
    var type: UInt32 = 1  // PT_LOAD
    var flags: UInt32 = 5  // PF_R | PF_X
    var offset: UInt64
    var address: UInt64
    var fileSize: UInt64
    var memorySize: UInt64? = nil
}

private struct SectionFields {
    var name: String
    var type: UInt32 = 1  // SHT_PROGBITS
    var address: UInt64
    var offset: UInt64
    var size: UInt64
}

/// A valid ELF64 x86-64 file, with the positions tests need in order to break one field at a time.
private struct BuiltELF {
    var bytes: [UInt8]
    /// File offset of the section header table (0 when there are no sections).
    let sectionHeaders: Int
    let sectionNames: Int
    let sectionNamesSize: Int

    func sectionHeader(_ index: Int) -> Int { sectionHeaders + 64 * index }
}

/// Payload bytes start here, after the ELF header and up to 8 program headers.
private let payloadOffset = 0x200
private let payload: [UInt8] = (0..<0x200).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 1) }

/// Layout: ELF header, program headers, payload at 0x200, .shstrtab, section headers
/// (null section, the given sections, then .shstrtab as the last one).
private func buildELF(_ programHeaders: [ProgramHeaderFields], sections: [SectionFields] = [],
                      programHeaderEntrySize: Int = 56) -> BuiltELF {
    var file = [UInt8](repeating: 0, count: payloadOffset)
    file.replaceSubrange(0..<8, with: [0x7F, 0x45, 0x4C, 0x46, 2, 1, 1, 0])
    file.store(UInt16(2), at: 16)  // ET_EXEC
    file.store(UInt16(62), at: 18)  // EM_X86_64
    file.store(UInt32(1), at: 20)
    file.store(UInt64(programHeaders.isEmpty ? 0 : 64), at: 32)
    file.store(UInt16(64), at: 52)
    file.store(UInt16(programHeaderEntrySize), at: 54)
    file.store(UInt16(programHeaders.count), at: 56)
    file.store(UInt16(64), at: 58)
    for (index, header) in programHeaders.enumerated() {
        let at = 64 + programHeaderEntrySize * index
        file.store(header.type, at: at)
        file.store(header.flags, at: at + 4)
        file.store(header.offset, at: at + 8)
        file.store(header.address, at: at + 16)
        file.store(header.address, at: at + 24)
        file.store(header.fileSize, at: at + 32)
        file.store(header.memorySize ?? header.fileSize, at: at + 40)
        file.store(UInt64(0x1000), at: at + 48)
    }
    precondition(file.count == payloadOffset, "too many program headers for the test layout")
    file += payload
    guard !sections.isEmpty else {
        return BuiltELF(bytes: file, sectionHeaders: 0, sectionNames: 0, sectionNamesSize: 0)
    }

    var names: [UInt8] = [0]
    var nameOffsets: [UInt32] = []
    for name in sections.map(\.name) + [".shstrtab"] {
        nameOffsets.append(UInt32(names.count))
        names += Array(name.utf8) + [0]
    }
    let namesOffset = file.count
    file += names
    while file.count % 8 != 0 { file.append(0) }
    let headersOffset = file.count
    let all = sections + [SectionFields(name: ".shstrtab", type: 3, address: 0,
                                        offset: UInt64(namesOffset), size: UInt64(names.count))]
    file += [UInt8](repeating: 0, count: 64)  // section 0: SHT_NULL
    for (index, section) in all.enumerated() {
        let at = file.count
        file.store(nameOffsets[index], at: at)
        file.store(section.type, at: at + 4)
        file.store(section.address, at: at + 16)
        file.store(section.offset, at: at + 24)
        file.store(section.size, at: at + 32)
        file.store(UInt64(1), at: at + 48)
        file.store(UInt64(0), at: at + 56)
    }
    file.store(UInt64(headersOffset), at: 40)
    file.store(UInt16(all.count + 1), at: 60)
    file.store(UInt16(all.count), at: 62)
    return BuiltELF(bytes: file, sectionHeaders: headersOffset, sectionNames: namesOffset, sectionNamesSize: names.count)
}

/// One executable LOAD over the payload, a .text section inside it and a .bss after it.
private func simpleELF() -> BuiltELF {
    buildELF(
        [ProgramHeaderFields(offset: UInt64(payloadOffset), address: 0x40_0000, fileSize: 0x100)],
        sections: [
            SectionFields(name: ".text", address: 0x40_0010, offset: UInt64(payloadOffset + 0x10), size: 0x80),
            SectionFields(name: ".bss", type: 8, address: 0x40_1000, offset: UInt64(payloadOffset + 0x100), size: 0x1_0000),
        ])
}

private func fileSlice(_ bytes: [UInt8], _ offset: Int, _ count: Int) -> [UInt8] {
    Array(bytes[offset..<offset + count])
}

// MARK: - Tests

@Suite struct ELFTests {
    // MARK: Identification

    @Test func recognisesTheMagic() {
        #expect(ELF.isELF([0x7F, 0x45, 0x4C, 0x46]))
        #expect(ELF.isELF(buildELF([]).bytes))
        #expect(!ELF.isELF([]))
        #expect(!ELF.isELF([0x7F, 0x45, 0x4C]))
        #expect(!ELF.isELF(Array("MZ\u{90}\0".utf8)))
    }

    @Test func rejectsFilesThatAreNotELF() {
        for input in [[], [0x7F, 0x45, 0x4C], Array("#!/bin/sh\n".utf8)] as [[UInt8]] {
            let error = #expect(throws: ELFError.self) { try ELF.executableSegments(input) }
            #expect(error?.message == "not an ELF file: no \\x7FELF magic at file offset 0x0")
            #expect(error?.description == error?.message)
            #expect(throws: ELFError.self) { try ELF.section(named: ".text", in: input) }
        }
    }

    @Test func rejectsOtherClassesAndByteOrders() {
        func message(patching offset: Int, to value: UInt8) -> String? {
            var file = simpleELF().bytes
            file[offset] = value
            return (#expect(throws: ELFError.self) { try ELF.executableSegments(file) })?.message
        }
        #expect(message(patching: 4, to: 1) == "ELF32 files are not supported (EI_CLASS at file offset 0x4 is 1)")
        #expect(message(patching: 4, to: 0) == "not an ELF64 file: EI_CLASS at file offset 0x4 is 0")
        #expect(message(patching: 5, to: 2) == "big-endian ELF files are not supported (EI_DATA at file offset 0x5 is 2)")
        #expect(message(patching: 5, to: 7) == "not a little-endian ELF file: EI_DATA at file offset 0x5 is 7")
    }

    @Test func namesAnELF32FileEvenWhenItIsShorterThanAnELF64Header() {
        let elf32 = [0x7F, 0x45, 0x4C, 0x46, 1, 1, 1, 0] + [UInt8](repeating: 0, count: 44)
        let error = #expect(throws: ELFError.self) { try ELF.executableSegments(elf32) }
        #expect(error?.message.hasPrefix("ELF32 files are not supported") == true)
    }

    @Test func rejectsOtherMachines() {
        var file = simpleELF().bytes
        file.store(UInt16(40), at: 18)  // EM_ARM
        let error = #expect(throws: ELFError.self) { try ELF.executableSegments(file) }
        #expect(error?.message == "machine 40 is not x86-64 (e_machine at file offset 0x12)")
        #expect(throws: ELFError.self) { try ELF.section(named: ".text", in: file) }
    }

    @Test func rejectsATruncatedHeader() {
        let file = Array(simpleELF().bytes.prefix(40))
        let error = #expect(throws: ELFError.self) { try ELF.executableSegments(file) }
        #expect(error?.message == "truncated ELF header: the file ends at file offset 0x28, an ELF64 header needs 0x40 bytes")
    }

    // MARK: Program headers

    @Test func returnsOnlyExecutableLoadsWithFileBytesInFileOrder() throws {
        let file = buildELF([
            // NaCl-style PT_PHDR pointing at nothing any LOAD covers, even past the end of the file.
            ProgramHeaderFields(type: 6, flags: 4, offset: 0xFFFF_FFFF_0000, address: 0, fileSize: 0x120),
            ProgramHeaderFields(flags: 4, offset: 0x200, address: 0x1_0000, fileSize: 0x10),  // R: not code
            ProgramHeaderFields(offset: 0x210, address: 0x2_0000, fileSize: 0x30, memorySize: 0x1000),
            ProgramHeaderFields(offset: 0x240, address: 0x3_0000, fileSize: 0, memorySize: 0x100),  // nothing in the file
            ProgramHeaderFields(type: 4, offset: 0x250, address: 0, fileSize: 0x10),  // PT_NOTE with PF_X set
            ProgramHeaderFields(flags: 7, offset: 0x300, address: 0x4_0000, fileSize: 0x100),
        ]).bytes
        let segments = try ELF.executableSegments(file)
        #expect(segments == [
            CodeSegment(name: "LOAD[2]", fileOffset: 0x210, virtualAddress: 0x2_0000, bytes: fileSlice(file, 0x210, 0x30)),
            CodeSegment(name: "LOAD[5]", fileOffset: 0x300, virtualAddress: 0x4_0000, bytes: fileSlice(file, 0x300, 0x100)),
        ])
    }

    @Test func aFileWithoutExecutableCodeGivesNoSegments() throws {
        #expect(try ELF.executableSegments(buildELF([]).bytes).isEmpty)
        let dataOnly = buildELF([ProgramHeaderFields(flags: 6, offset: 0x200, address: 0x1000, fileSize: 0x10)])
        #expect(try ELF.executableSegments(dataOnly.bytes).isEmpty)
    }

    @Test func readsProgramHeadersWithALargerEntrySize() throws {
        let file = buildELF([
            ProgramHeaderFields(type: 6, offset: 0, address: 0, fileSize: 0x100),
            ProgramHeaderFields(offset: 0x220, address: 0x8000, fileSize: 0x20),
        ], programHeaderEntrySize: 64).bytes
        #expect(try ELF.executableSegments(file)
            == [CodeSegment(name: "LOAD[1]", fileOffset: 0x220, virtualAddress: 0x8000, bytes: fileSlice(file, 0x220, 0x20))])
    }

    @Test func rejectsAProgramHeaderEntrySizeTooSmall() {
        var file = simpleELF().bytes
        file.store(UInt16(32), at: 54)
        let error = #expect(throws: ELFError.self) { try ELF.executableSegments(file) }
        #expect(error?.message == "e_phentsize at file offset 0x36 is 32, smaller than an ELF64 program header (56 bytes)")
    }

    @Test func rejectsAProgramHeaderTablePastTheEnd() {
        var file = simpleELF().bytes
        file.store(UInt64(file.count - 10), at: 32)
        let error = #expect(throws: ELFError.self) { try ELF.executableSegments(file) }
        #expect(error?.message.hasPrefix("program header table (e_phoff at file offset 0x20 is 0x\(String(file.count - 10, radix: 16))") == true)
        #expect(error?.message.contains("past the end of the file") == true)

        file.store(UInt64.max - 8, at: 32)
        let overflow = #expect(throws: ELFError.self) { try ELF.executableSegments(file) }
        #expect(overflow?.message.hasSuffix("the end offset overflows") == true)
    }

    @Test func rejectsHugeProgramHeaderCounts() {
        var file = simpleELF().bytes
        file.store(UInt16(0xFFFE), at: 56)  // 0xFFFF would mean "see section 0"
        let error = #expect(throws: ELFError.self) { try ELF.executableSegments(file) }
        #expect(error?.message.contains("65534 entries of 56 bytes") == true)
        #expect(error?.message.contains("past the end of the file") == true)
    }

    @Test func rejectsASegmentPastTheEndOfTheFile() {
        var file = simpleELF().bytes
        file.store(UInt64(0x100_0000), at: 64 + 32)  // p_filesz
        let error = #expect(throws: ELFError.self) { try ELF.executableSegments(file) }
        #expect(error?.message.hasPrefix("program header 0 (file offset 0x40): p_offset 0x200 + p_filesz 0x1000000: ends at file offset 0x1000200, past the end of the file") == true)
    }

    @Test func rejectsASegmentWhoseEndOverflows() {
        var file = simpleELF().bytes
        file.store(UInt64.max - 0x10, at: 64 + 8)  // p_offset
        let error = #expect(throws: ELFError.self) { try ELF.executableSegments(file) }
        #expect(error?.message == "program header 0 (file offset 0x40): p_offset 0xffffffffffffffef + p_filesz 0x100: the end offset overflows")
    }

    @Test func rejectsAnExecutableSegmentWhoseAddressesWrap() {
        let file = buildELF([ProgramHeaderFields(offset: 0x200, address: UInt64.max - 0xF, fileSize: 0x20)]).bytes
        let error = #expect(throws: ELFError.self) { try ELF.executableSegments(file) }
        #expect(error?.message == "program header 0 (file offset 0x40): p_vaddr 0xfffffffffffffff0 + p_memsz 0x20 wraps past 2^64")
        #expect(error?.kind == .damaged)
    }

    @Test func rejectsMoreFileBytesThanMemory() {
        let file = buildELF([ProgramHeaderFields(offset: 0x200, address: 0x1000, fileSize: 0x20, memorySize: 0x10)]).bytes
        let error = #expect(throws: ELFError.self) { try ELF.executableSegments(file) }
        #expect(error?.message == "program header 0 (file offset 0x40): p_filesz 0x20 is larger than p_memsz 0x10")
    }

    @Test func rejectsExecutableSegmentsThatOverlap() throws {
        // In memory: the bss tail of one under the code of the other counts.
        let inMemory = buildELF([
            ProgramHeaderFields(offset: 0x200, address: 0x1000, fileSize: 0x20, memorySize: 0x100),
            ProgramHeaderFields(offset: 0x240, address: 0x10F0, fileSize: 0x20),
        ]).bytes
        let memory = #expect(throws: ELFError.self) { try ELF.executableSegments(inMemory) }
        #expect(memory?.message == "executable segments overlap in memory: program header 0 (file offset 0x40) maps "
                + "0x1000-0x1100, program header 1 (file offset 0x78) maps 0x10f0-0x1110")
        // In the file: the same bytes at two addresses.
        let inFile = buildELF([
            ProgramHeaderFields(offset: 0x200, address: 0x1000, fileSize: 0x40),
            ProgramHeaderFields(offset: 0x220, address: 0x9000, fileSize: 0x40),
        ]).bytes
        let file = #expect(throws: ELFError.self) { try ELF.executableSegments(inFile) }
        #expect(file?.message.hasPrefix("executable segments share file bytes: program header 0 (file offset 0x40) loads "
                                        + "file offset 0x200-0x240 at 0x1000, program header 1") == true, "\(file?.message ?? "")")
        // Adjacent is not overlapping, and a non-executable segment may share anything.
        #expect(try ELF.executableSegments(buildELF([
            ProgramHeaderFields(offset: 0x200, address: 0x1000, fileSize: 0x20),
            ProgramHeaderFields(offset: 0x220, address: 0x1020, fileSize: 0x20),
            ProgramHeaderFields(flags: 4, offset: 0x200, address: 0x1000, fileSize: 0x40),
        ]).bytes).count == 2)
    }

    @Test func tellsDamageFromCodeItDoesNotVerify() {
        var elf32 = simpleELF().bytes
        elf32[4] = 1
        #expect((#expect(throws: ELFError.self) { try ELF.executableSegments(elf32) })?.kind == .unsupported)
        #expect((#expect(throws: ELFError.self) { try ELF.executableSegments(Array("text".utf8)) })?.kind == .unsupported)
        let truncated = Array(simpleELF().bytes.prefix(100))
        #expect((#expect(throws: ELFError.self) { try ELF.executableSegments(truncated) })?.kind == .damaged)
    }

    @Test func readsTheExtendedProgramHeaderCount() throws {
        var built = simpleELF()
        built.bytes.store(UInt16(0xFFFF), at: 56)  // PN_XNUM: the count is in section 0's sh_info
        built.bytes.store(UInt32(1), at: built.sectionHeader(0) + 44)
        #expect(try ELF.executableSegments(built.bytes).map(\.name) == ["LOAD[0]"])

        built.bytes.store(UInt32.max, at: built.sectionHeader(0) + 44)
        #expect(throws: ELFError.self) { try ELF.executableSegments(built.bytes) }

        var withoutSections = buildELF([ProgramHeaderFields(offset: 0x200, address: 0, fileSize: 1)]).bytes
        withoutSections.store(UInt16(0xFFFF), at: 56)
        let error = #expect(throws: ELFError.self) { try ELF.executableSegments(withoutSections) }
        #expect(error?.message.contains("no section header table") == true)
    }

    @Test func ignoresABrokenSectionTableWhenReadingSegments() throws {
        var file = simpleELF().bytes
        file.store(UInt64.max, at: 40)  // e_shoff
        #expect(try ELF.executableSegments(file).count == 1)
        #expect(throws: ELFError.self) { try ELF.section(named: ".text", in: file) }
    }

    // MARK: Sections

    @Test func findsSectionsByName() throws {
        let file = simpleELF().bytes
        let text = try #require(try ELF.section(named: ".text", in: file))
        #expect(text == CodeSegment(name: ".text", fileOffset: 0x210, virtualAddress: 0x40_0010, bytes: fileSlice(file, 0x210, 0x80)))

        let bss = try #require(try ELF.section(named: ".bss", in: file))
        #expect(bss == CodeSegment(name: ".bss", fileOffset: 0x300, virtualAddress: 0x40_1000, bytes: []))

        #expect(try ELF.section(named: ".data", in: file) == nil)
        #expect(try ELF.section(named: "", in: file) == nil)  // the null section is not a section
        #expect(try ELF.section(named: ".tex", in: file) == nil)
    }

    @Test func aFileWithoutSectionHeadersOrNamesHasNoSections() throws {
        #expect(try ELF.section(named: ".text", in: buildELF([]).bytes) == nil)

        var unnamed = simpleELF().bytes
        unnamed.store(UInt16(0), at: 62)  // e_shstrndx SHN_UNDEF
        #expect(try ELF.section(named: ".text", in: unnamed) == nil)
    }

    @Test func readsExtendedSectionCountAndNameIndex() throws {
        var built = simpleELF()
        let count = built.bytes.load(UInt16.self, at: 60)
        let namesIndex = built.bytes.load(UInt16.self, at: 62)
        built.bytes.store(UInt16(0), at: 60)
        built.bytes.store(UInt64(count), at: built.sectionHeader(0) + 32)  // sh_size
        built.bytes.store(UInt16(0xFFFF), at: 62)  // SHN_XINDEX
        built.bytes.store(UInt32(namesIndex), at: built.sectionHeader(0) + 40)  // sh_link
        #expect(try ELF.section(named: ".text", in: built.bytes)?.virtualAddress == 0x40_0010)

        built.bytes.store(UInt64.max / 2, at: built.sectionHeader(0) + 32)
        let error = #expect(throws: ELFError.self) { try ELF.section(named: ".text", in: built.bytes) }
        #expect(error?.message.hasPrefix("section header table (e_shoff at file offset 0x28") == true)
    }

    @Test func rejectsASectionNameOffsetOutOfRange() {
        var built = simpleELF()
        built.bytes.store(UInt32(0xFFFF), at: built.sectionHeader(1))  // .text's sh_name
        let error = #expect(throws: ELFError.self) { try ELF.section(named: ".text", in: built.bytes) }
        #expect(error?.message == "section 1 (header at file offset 0x\(String(built.sectionHeader(1), radix: 16))): "
                + "sh_name 0xffff is outside the section name table "
                + "(file offset 0x\(String(built.sectionNames, radix: 16)), size 0x\(String(built.sectionNamesSize, radix: 16)))")
    }

    @Test func rejectsANameWithoutNUL() throws {
        var built = simpleELF()
        built.bytes[built.sectionNames + built.sectionNamesSize - 1] = UInt8(ascii: "x")  // end of ".shstrtab"
        #expect(try ELF.section(named: ".text", in: built.bytes) != nil)  // found before the broken name
        let error = #expect(throws: ELFError.self) { try ELF.section(named: ".data", in: built.bytes) }
        #expect(error?.message.contains("without a NUL") == true)
    }

    @Test func rejectsABadSectionNameTable() {
        var built = simpleELF()
        built.bytes.store(UInt16(9), at: 62)
        let index = #expect(throws: ELFError.self) { try ELF.section(named: ".text", in: built.bytes) }
        #expect(index?.message == "section name table index 9 (e_shstrndx, file offset 0x3e) is not below the section count 4")

        built = simpleELF()
        built.bytes.store(UInt64(1) << 40, at: built.sectionHeader(3) + 32)  // .shstrtab's sh_size
        let size = #expect(throws: ELFError.self) { try ELF.section(named: ".text", in: built.bytes) }
        #expect(size?.message.hasPrefix("section name table (section 3, header at file offset") == true)
    }

    @Test func rejectsASectionHeaderEntrySizeTooSmall() {
        var file = simpleELF().bytes
        file.store(UInt16(40), at: 58)
        let error = #expect(throws: ELFError.self) { try ELF.section(named: ".text", in: file) }
        #expect(error?.message == "e_shentsize at file offset 0x3a is 40, smaller than an ELF64 section header (64 bytes)")
    }

    @Test func rejectsSectionContentsPastTheEnd() {
        var built = simpleELF()
        built.bytes.store(UInt64.max, at: built.sectionHeader(1) + 32)  // .text's sh_size
        let error = #expect(throws: ELFError.self) { try ELF.section(named: ".text", in: built.bytes) }
        #expect(error?.message.hasPrefix("section .text (header at file offset") == true)
        #expect(error?.message.hasSuffix("the end offset overflows") == true)
    }

    // MARK: Real files

    // Expected figures from `readelf -lW` / `readelf -SW` on the corpus files:
    //   x64_hello_world.nexe   LOAD 0x020000 0x0000000000020000 ... FileSiz 0x007600 MemSiz 0x007600 R E
    //                          .text  addr 0x20080, offset 0x020080, size 0x007520
    //                          .bss   NOBITS addr 0x50940, offset 0x050924, size 0x000090
    //   x64_fib_array_v2.nexe  LOAD 0x020000 0x0000000000020000 ... FileSiz 0x031940 MemSiz 0x031940 R E
    //                          .text  addr 0x20080, offset 0x020080, size 0x031860
    // Both have 4 program headers: PHDR (not covered by any LOAD), LOAD R E, LOAD R, LOAD RW.

    @Test(.enabled(if: naclCorpusIsPresent, naclCorpusMissing),
          arguments: [("x64_hello_world.nexe", 0x7600, 0x7520), ("x64_fib_array_v2.nexe", 0x3_1940, 0x3_1860)])
    func naclExecutableSegment(file name: String, segmentSize: Int, textSize: Int) throws {
        let file = try naclFile(name)
        let segments = try ELF.executableSegments(file)
        #expect(segments.map(\.name) == ["LOAD[1]"])
        let segment = try #require(segments.first)
        #expect(segment.fileOffset == 0x2_0000)
        #expect(segment.virtualAddress == 0x2_0000)
        #expect(segment.bytes.count == segmentSize)
        #expect(segment.bytes == fileSlice(file, 0x2_0000, segmentSize))

        let text = try #require(try ELF.section(named: ".text", in: file))
        #expect(text.fileOffset == 0x2_0080)
        #expect(text.virtualAddress == 0x2_0080)
        #expect(text.bytes.count == textSize)
        let start = Int(text.virtualAddress - segment.virtualAddress)
        #expect(text.bytes == Array(segment.bytes[start..<start + text.bytes.count]))
    }

    @Test(.enabled(if: naclCorpusIsPresent, naclCorpusMissing))
    func naclBSSHasNoFileBytes() throws {
        let bss = try #require(try ELF.section(named: ".bss", in: naclFile("x64_hello_world.nexe")))
        #expect(bss == CodeSegment(name: ".bss", fileOffset: 0x5_0924, virtualAddress: 0x5_0940, bytes: []))
    }

    @Test(.enabled(if: !systemBinaries.isEmpty, "no x86-64 /bin/true or /usr/bin/ls on this host"),
          arguments: systemBinaries)
    func systemBinaryTextLiesInsideItsExecutableSegment(path: String) throws {
        let file = try [UInt8](#require(FileManager.default.contents(atPath: path)))
        let segments = try ELF.executableSegments(file)
        #expect(!segments.isEmpty)
        for segment in segments {
            #expect(segment.name.hasPrefix("LOAD["))
            #expect(segment.bytes == fileSlice(file, segment.fileOffset, segment.bytes.count))
        }
        let text = try #require(try ELF.section(named: ".text", in: file))
        #expect(!text.bytes.isEmpty)
        let segment = try #require(segments.first { segment in
            text.virtualAddress >= segment.virtualAddress
                && text.virtualAddress + UInt64(text.bytes.count) <= segment.virtualAddress + UInt64(segment.bytes.count)
        }, ".text is not inside any executable LOAD segment")
        let start = Int(text.virtualAddress - segment.virtualAddress)
        #expect(text.bytes == Array(segment.bytes[start..<start + text.bytes.count]))
        #expect(text.fileOffset == segment.fileOffset + start)
    }

    // MARK: Corrupt and truncated inputs

    @Test(.enabled(if: naclCorpusIsPresent, naclCorpusMissing))
    func everyShortPrefixOfARealFileIsAnError() throws {
        let file = try naclFile("x64_hello_world.nexe")
        // The program header table ends at 64 + 4 * 56 = 288, so no prefix below 200 bytes is a usable file.
        for length in 0..<200 {
            let prefix = Array(file.prefix(length))
            let segmentError = #expect(throws: ELFError.self, "prefix of \(length) bytes") {
                try ELF.executableSegments(prefix)
            }
            let sectionError = #expect(throws: ELFError.self, "prefix of \(length) bytes") {
                try ELF.section(named: ".text", in: prefix)
            }
            for error in [segmentError, sectionError].compactMap({ $0 }) {
                #expect(error.message.contains("offset"), "\(error.message)")
            }
            if length >= 64 {
                #expect(segmentError?.message.hasPrefix("program header table") == true, "prefix of \(length) bytes")
                #expect(sectionError?.message.hasPrefix("section header 0") == true, "prefix of \(length) bytes")
            }
        }
    }

    @Test(.enabled(if: naclCorpusIsPresent, naclCorpusMissing))
    func randomByteFlipsInTheHeadersNeverCrash() throws {
        var file = try naclFile("x64_hello_world.nexe")
        let original = file
        let sectionHeaders = Int(file.load(UInt64.self, at: 40))
        let sectionHeaderCount = Int(file.load(UInt16.self, at: 60))
        // ELF header + program headers, and the section header table.
        let regions = [0..<64 + 4 * 56, sectionHeaders..<sectionHeaders + 64 * sectionHeaderCount]
        var random = FuzzTests.SplitMix(state: 0x51E7E)
        var successes = 0, failures = 0

        for _ in 0..<4000 {
            var flipped: [Int] = []
            for _ in 0..<Int.random(in: 1...4, using: &random) {
                let position = Int.random(in: regions.randomElement(using: &random)!, using: &random)
                file[position] = UInt8.random(in: 0...255, using: &random)
                flipped.append(position)
            }
            do {
                for segment in try ELF.executableSegments(file) {
                    #expect(segment.name.hasPrefix("LOAD["))
                    #expect(!segment.bytes.isEmpty)
                    #expect(segment.bytes == fileSlice(file, segment.fileOffset, segment.bytes.count))
                }
                successes += 1
            } catch {
                #expect(error.message.contains("offset"), "\(error.message)")
                failures += 1
            }
            do {
                if let text = try ELF.section(named: ".text", in: file) {
                    #expect(text.bytes == fileSlice(file, text.fileOffset, text.bytes.count))
                }
                successes += 1
            } catch {
                #expect(error.message.contains("offset"), "\(error.message)")
                failures += 1
            }
            for position in flipped { file[position] = original[position] }
        }
        // Both outcomes must occur, or the flips did not reach the fields that matter.
        #expect(successes > 0)
        #expect(failures > 0)
    }
}
