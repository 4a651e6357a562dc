/// One executable piece of code from an ELF file (or raw input).
public struct CodeSegment: Sendable, Equatable {
    /// "LOAD[i]" for program header i (its index in the table, as readelf numbers segments),
    /// or the section's name such as ".text".
    public let name: String
    public let fileOffset: Int
    public let virtualAddress: UInt64
    public let bytes: [UInt8]

    public init(name: String, fileOffset: Int, virtualAddress: UInt64, bytes: [UInt8]) {
        self.name = name
        self.fileOffset = fileOffset
        self.virtualAddress = virtualAddress
        self.bytes = bytes
    }
}

/// A file Sieve cannot take code from: not ELF64 x86-64, or a header or table that does not fit the file.
public struct ELFError: Error, CustomStringConvertible, Equatable {
    /// Why there is no code to verify.
    public enum Kind: Sendable, Equatable {
        /// The headers contradict themselves or the file (truncated, out of the file, overflowing,
        /// wrapping, overlapping): nobody can say what a loader would run, so it is an input error.
        case damaged
        /// Well formed, but not code Sieve verifies: no ELF magic, ELF32, big-endian, another machine.
        case unsupported
    }

    /// What is wrong and at which file offset.
    public let message: String
    public let kind: Kind

    public init(_ message: String, kind: Kind = .damaged) {
        self.message = message
        self.kind = kind
    }

    public var description: String { message }
}

/// Code extraction from ELF64 little-endian x86-64 files.
///
/// Inputs are untrusted: every read is bounds-checked and every offset sum overflow-checked,
/// so a corrupt file gives an `ELFError`, never a trap or an out-of-bounds read.
public enum ELF {
    /// True when the bytes start with the ELF magic.
    public static func isELF(_ bytes: [UInt8]) -> Bool {
        bytes.count >= 4 && bytes[0] == 0x7F && bytes[1] == 0x45 && bytes[2] == 0x4C && bytes[3] == 0x46
    }

    /// The executable LOAD segments (p_type PT_LOAD with PF_X), in file order, each with the file bytes
    /// it covers (p_filesz, not p_memsz). Segments with no file bytes are left out; a file without
    /// executable code gives an empty array.
    ///
    /// An executable segment is refused (`ELFError.Kind.damaged`, naming the segment and its
    /// fields) when its file range leaves the file or overflows, when p_filesz exceeds p_memsz (Linux
    /// refuses to load that too), when its address range wraps past 2^64, and when two executable
    /// segments overlap in memory (which bytes a loader leaves there is its choice, not the
    /// verifier's) or in the file (the same bytes verified under two addresses: a finding or an
    /// instruction boundary judged at one address says nothing of the other).
    public static func executableSegments(_ bytes: [UInt8]) throws(ELFError) -> [CodeSegment] {
        let file = try ELFFile(bytes)
        let table = try file.programHeaderTable()
        var segments: [CodeSegment] = []
        var placed: [PlacedSegment] = []
        for index in 0..<table.count {
            let header = table.entryOffset(index)
            // Other types (PT_PHDR, PT_NOTE, PT_GNU_STACK...) describe the image but load nothing:
            // NaCl's PT_PHDR even points at bytes no LOAD covers, so they are not looked at at all.
            guard try file.reader.uint32(at: header, "p_type") == ProgramHeader.typeLoad,
                  try file.reader.uint32(at: header + 4, "p_flags") & ProgramHeader.flagExecute != 0
            else { continue }
            let offset = try file.reader.uint64(at: header + 8, "p_offset")
            let address = try file.reader.uint64(at: header + 16, "p_vaddr")
            let fileSize = try file.reader.uint64(at: header + 32, "p_filesz")
            let memorySize = try file.reader.uint64(at: header + 40, "p_memsz")
            let name = "program header \(index) (file offset \(hex(header)))"
            let range = try file.reader.range(offset: fileSize == 0 ? 0 : offset, size: fileSize,
                                              "\(name): p_offset \(hex(offset)) + p_filesz \(hex(fileSize))")
            guard fileSize <= memorySize else {
                throw ELFError("\(name): p_filesz \(hex(fileSize)) is larger than p_memsz \(hex(memorySize))")
            }
            guard !address.addingReportingOverflow(memorySize).overflow else {
                throw ELFError("\(name): p_vaddr \(hex(address)) + p_memsz \(hex(memorySize)) wraps past 2^64")
            }
            // Zero-length segments map nothing and cannot overlap another.
            if memorySize > 0 {
                placed.append(PlacedSegment(index: index, header: header, address: address, memorySize: memorySize,
                                            offset: offset, fileSize: fileSize))
            }
            if fileSize == 0 { continue }
            segments.append(CodeSegment(name: "LOAD[\(index)]", fileOffset: range.lowerBound,
                                        virtualAddress: address, bytes: Array(bytes[range])))
        }
        try PlacedSegment.checkDisjoint(placed)
        return segments
    }

    /// The section with that name (e.g. ".text"), from the section header table and .shstrtab;
    /// nil when there is no such section or the file has no section headers or no section names.
    /// A SHT_NOBITS section (such as .bss) has no file bytes, so its `bytes` are empty.
    public static func section(named name: String, in bytes: [UInt8]) throws(ELFError) -> CodeSegment? {
        let file = try ELFFile(bytes)
        let table = try file.sectionHeaderTable()
        guard table.count > 0 else { return nil }
        let namesIndex = try file.sectionNamesIndex()
        guard namesIndex != SectionHeader.undefinedIndex else { return nil }
        guard namesIndex < UInt64(table.count) else {
            throw ELFError("section name table index \(namesIndex) (e_shstrndx, file offset 0x3e) "
                           + "is not below the section count \(table.count)")
        }
        let namesHeader = table.entryOffset(Int(namesIndex))
        let names = try file.reader.range(
            offset: try file.reader.uint64(at: namesHeader + 24, "sh_offset"),
            size: try file.reader.uint64(at: namesHeader + 32, "sh_size"),
            "section name table (section \(namesIndex), header at file offset \(hex(namesHeader)))")

        let wanted = Array(name.utf8)
        for index in 0..<table.count {
            let header = table.entryOffset(index)
            let type = try file.reader.uint32(at: header + 4, "sh_type")
            // SHT_NULL entries (always section 0) are unused slots, not sections.
            if type == SectionHeader.typeNull { continue }
            let nameOffset = try file.reader.uint32(at: header, "sh_name")
            let sectionName = try file.reader.string(
                at: nameOffset, in: names,
                "section \(index) (header at file offset \(hex(header))): sh_name \(hex(nameOffset))")
            guard sectionName.elementsEqual(wanted) else { continue }

            let address = try file.reader.uint64(at: header + 16, "sh_addr")
            let offset = try file.reader.uint64(at: header + 24, "sh_offset")
            // SHT_NOBITS sizes memory, not file bytes (.bss ends past the end of the file).
            let size: UInt64 = type == SectionHeader.typeNoBits ? 0 : try file.reader.uint64(at: header + 32, "sh_size")
            let range = try file.reader.range(
                offset: offset, size: size,
                "section \(name) (header at file offset \(hex(header))): sh_offset \(hex(offset)) + sh_size \(hex(size))")
            return CodeSegment(name: name, fileOffset: range.lowerBound, virtualAddress: address,
                               bytes: Array(bytes[range]))
        }
        return nil
    }
}

/// An executable segment's place in memory and in the file: two may share neither.
private struct PlacedSegment {
    let index: Int
    /// The program header's file offset.
    let header: Int
    let address: UInt64, memorySize: UInt64
    let offset: UInt64, fileSize: UInt64

    var description: String { "program header \(index) (file offset \(hex(header)))" }

    /// Sorted by start, two ranges overlap only if some neighbours do. Sums cannot overflow: the
    /// address ranges were checked not to wrap, and file ranges to lie inside the file.
    static func checkDisjoint(_ segments: [PlacedSegment]) throws(ELFError) {
        let byAddress = segments.sorted { ($0.address, $0.index) < ($1.address, $1.index) }
        for (first, second) in zip(byAddress, byAddress.dropFirst()) where second.address < first.address + first.memorySize {
            throw ELFError("executable segments overlap in memory: \(first.description) maps "
                           + "\(hex(first.address))-\(hex(first.address + first.memorySize)), \(second.description) maps "
                           + "\(hex(second.address))-\(hex(second.address + second.memorySize))")
        }
        let byOffset = segments.filter { $0.fileSize > 0 }.sorted { ($0.offset, $0.index) < ($1.offset, $1.index) }
        for (first, second) in zip(byOffset, byOffset.dropFirst()) where second.offset < first.offset + first.fileSize {
            throw ELFError("executable segments share file bytes: \(first.description) loads file offset "
                           + "\(hex(first.offset))-\(hex(first.offset + first.fileSize)) at \(hex(first.address)), "
                           + "\(second.description) loads \(hex(second.offset))-\(hex(second.offset + second.fileSize)) "
                           + "at \(hex(second.address)): the same code under two addresses")
        }
    }
}

// MARK: - Layout constants (System V gABI, ELF64)

private enum FileHeader {
    static let size = 64
    static let classELF32: UInt8 = 1, classELF64: UInt8 = 2
    static let dataLittleEndian: UInt8 = 1, dataBigEndian: UInt8 = 2
    static let machineX86_64: UInt16 = 62
}

private enum ProgramHeader {
    static let size = 56
    static let typeLoad: UInt32 = 1
    static let flagExecute: UInt32 = 1
    /// e_phnum value meaning "the real count is in section header 0's sh_info".
    static let extendedCount: UInt16 = 0xFFFF
}

private enum SectionHeader {
    static let size = 64
    static let typeNull: UInt32 = 0
    static let typeNoBits: UInt32 = 8
    static let undefinedIndex: UInt64 = 0
    /// e_shstrndx value meaning "the real index is in section header 0's sh_link".
    static let extendedIndex: UInt16 = 0xFFFF
}

// MARK: - Reading

/// A header table known to lie entirely inside the file, so its entries can be addressed with plain Int arithmetic.
private struct HeaderTable {
    let offset: Int
    let entrySize: Int
    let count: Int

    static let empty = HeaderTable(offset: 0, entrySize: 0, count: 0)

    func entryOffset(_ index: Int) -> Int { offset + index * entrySize }
}

/// An ELF64 little-endian x86-64 file whose identification and machine have been checked.
private struct ELFFile {
    let reader: LittleEndianReader

    init(_ bytes: [UInt8]) throws(ELFError) {
        reader = LittleEndianReader(bytes: bytes)
        guard ELF.isELF(bytes) else {
            throw ELFError("not an ELF file: no \\x7FELF magic at file offset 0x0", kind: .unsupported)
        }
        // Class and byte order come before the size check so that an ELF32 file is named as such.
        switch try reader.uint8(at: 4, "EI_CLASS") {
        case FileHeader.classELF64: break
        case FileHeader.classELF32:
            throw ELFError("ELF32 files are not supported (EI_CLASS at file offset 0x4 is 1)", kind: .unsupported)
        case let other:
            throw ELFError("not an ELF64 file: EI_CLASS at file offset 0x4 is \(other)")
        }
        switch try reader.uint8(at: 5, "EI_DATA") {
        case FileHeader.dataLittleEndian: break
        case FileHeader.dataBigEndian:
            throw ELFError("big-endian ELF files are not supported (EI_DATA at file offset 0x5 is 2)", kind: .unsupported)
        case let other:
            throw ELFError("not a little-endian ELF file: EI_DATA at file offset 0x5 is \(other)")
        }
        guard bytes.count >= FileHeader.size else {
            throw ELFError("truncated ELF header: the file ends at file offset \(hex(bytes.count)), "
                           + "an ELF64 header needs \(hex(FileHeader.size)) bytes")
        }
        let machine = try reader.uint16(at: 18, "e_machine")
        guard machine == FileHeader.machineX86_64 else {
            throw ELFError("machine \(machine) is not x86-64 (e_machine at file offset 0x12)", kind: .unsupported)
        }
    }

    func programHeaderTable() throws(ELFError) -> HeaderTable {
        var count = UInt64(try reader.uint16(at: 56, "e_phnum"))
        if count == UInt64(ProgramHeader.extendedCount) {
            guard let first = try firstSectionHeader() else {
                throw ELFError("e_phnum at file offset 0x38 is 0xffff (count in section header 0), "
                               + "but the file has no section header table")
            }
            count = first.info
        }
        return try table(
            "program header table", count: count,
            offset: try reader.uint64(at: 32, "e_phoff"), offsetField: "e_phoff at file offset 0x20",
            entrySize: try reader.uint16(at: 54, "e_phentsize"), entrySizeField: "e_phentsize at file offset 0x36",
            minimumEntrySize: ProgramHeader.size, entryKind: "program header")
    }

    /// Empty when the file has no section header table (e_shoff 0), which is legal for executables.
    func sectionHeaderTable() throws(ELFError) -> HeaderTable {
        guard let first = try firstSectionHeader() else { return .empty }
        var count = UInt64(try reader.uint16(at: 60, "e_shnum"))
        // With 0xff00 sections or more, e_shnum is 0 and section header 0's sh_size holds the count.
        if count == 0 { count = first.size }
        return try table(
            "section header table", count: count,
            offset: try reader.uint64(at: 40, "e_shoff"), offsetField: "e_shoff at file offset 0x28",
            entrySize: try reader.uint16(at: 58, "e_shentsize"), entrySizeField: "e_shentsize at file offset 0x3a",
            minimumEntrySize: SectionHeader.size, entryKind: "section header")
    }

    func sectionNamesIndex() throws(ELFError) -> UInt64 {
        let index = try reader.uint16(at: 62, "e_shstrndx")
        guard index == SectionHeader.extendedIndex else { return UInt64(index) }
        return UInt64(try firstSectionHeader()?.link ?? 0)
    }

    /// Section header 0, which carries the extended counts; nil when there is no section header table.
    private func firstSectionHeader() throws(ELFError) -> (size: UInt64, link: UInt32, info: UInt64)? {
        let offset = try reader.uint64(at: 40, "e_shoff")
        if offset == 0 { return nil }
        let entrySize = try reader.uint16(at: 58, "e_shentsize")
        guard Int(entrySize) >= SectionHeader.size else {
            throw ELFError("e_shentsize at file offset 0x3a is \(entrySize), "
                           + "smaller than an ELF64 section header (\(SectionHeader.size) bytes)")
        }
        let header = try reader.range(offset: offset, size: UInt64(SectionHeader.size),
                                      "section header 0 (e_shoff \(hex(offset)))").lowerBound
        return (size: try reader.uint64(at: header + 32, "sh_size"),
                link: try reader.uint32(at: header + 40, "sh_link"),
                info: UInt64(try reader.uint32(at: header + 44, "sh_info")))
    }

    private func table(_ tableName: String, count: UInt64, offset: UInt64, offsetField: String,
                       entrySize: UInt16, entrySizeField: String,
                       minimumEntrySize: Int, entryKind: String) throws(ELFError) -> HeaderTable {
        if count == 0 { return .empty }
        guard Int(entrySize) >= minimumEntrySize else {
            throw ELFError("\(entrySizeField) is \(entrySize), smaller than an ELF64 \(entryKind) (\(minimumEntrySize) bytes)")
        }
        let (size, overflow) = count.multipliedReportingOverflow(by: UInt64(entrySize))
        let description = "\(tableName) (\(offsetField) is \(hex(offset)), \(count) entries of \(entrySize) bytes)"
        guard !overflow else { throw ELFError("\(description): the table size overflows") }
        let range = try reader.range(offset: offset, size: size, description)
        // count * entrySize fits inside the file, so count and every entry offset fit in Int.
        return HeaderTable(offset: range.lowerBound, entrySize: Int(entrySize), count: Int(count))
    }
}

/// The file's bytes, read as little-endian integers; each read checks its bounds and names the field
/// it reads, so that a truncated file gives an error saying what is missing where.
private struct LittleEndianReader {
    let bytes: [UInt8]

    func uint8(at offset: Int, _ field: String) throws(ELFError) -> UInt8 {
        try integer(UInt8.self, at: offset, field)
    }

    func uint16(at offset: Int, _ field: String) throws(ELFError) -> UInt16 {
        try integer(UInt16.self, at: offset, field)
    }

    func uint32(at offset: Int, _ field: String) throws(ELFError) -> UInt32 {
        try integer(UInt32.self, at: offset, field)
    }

    func uint64(at offset: Int, _ field: String) throws(ELFError) -> UInt64 {
        try integer(UInt64.self, at: offset, field)
    }

    private func integer<T: FixedWidthInteger & UnsignedInteger>(
        _: T.Type, at offset: Int, _ field: String
    ) throws(ELFError) -> T {
        let size = MemoryLayout<T>.size
        guard offset >= 0, offset <= bytes.count - size else {
            throw ELFError("\(field) at file offset \(hex(offset)) lies past the end of the file (\(bytes.count) bytes)")
        }
        var value: T = 0
        for index in 0..<size {
            value |= T(bytes[offset + index]) << (8 * index)
        }
        return value
    }

    /// The file range [offset, offset + size) when it lies inside the file. The values come straight
    /// from headers, so the sum is checked for overflow before it is compared with the file size.
    func range(offset: UInt64, size: UInt64, _ what: String) throws(ELFError) -> Range<Int> {
        let (end, overflow) = offset.addingReportingOverflow(size)
        guard !overflow else {
            throw ELFError("\(what): the end offset overflows")
        }
        guard end <= UInt64(bytes.count) else {
            throw ELFError("\(what): ends at file offset \(hex(end)), past the end of the file (\(hex(bytes.count)) bytes)")
        }
        return Int(offset)..<Int(end)
    }

    /// The NUL-terminated string at `offset` inside the string table occupying `table`.
    func string(at offset: UInt32, in table: Range<Int>, _ what: String) throws(ELFError) -> ArraySlice<UInt8> {
        guard Int(offset) < table.count else {
            throw ELFError("\(what) is outside the section name table "
                           + "(file offset \(hex(table.lowerBound)), size \(hex(table.count)))")
        }
        let start = table.lowerBound + Int(offset)
        guard let end = bytes[start..<table.upperBound].firstIndex(of: 0) else {
            throw ELFError("\(what): the name at file offset \(hex(start)) runs to the end of the section name table without a NUL")
        }
        return bytes[start..<end]
    }
}

private func hex(_ value: some BinaryInteger) -> String {
    "0x" + String(value, radix: 16)
}
