import X86

/// Named sets of forms usable in `trust`, `allow`, `ban` and `group:` selectors: the built-in
/// semantic groups, one group per CPUID extension, and a policy's own `groups:`.
public struct GroupCatalog: Sendable {
    public struct BuiltinGroup: Sendable {
        public let name: String
        public let about: String
        let predicate: @Sendable (Form) -> Bool

        public func contains(_ form: Form) -> Bool { predicate(form) }

        static func make(name: String, about: String, _ predicate: @escaping @Sendable (Form) -> Bool) -> BuiltinGroup {
            BuiltinGroup(name: name, about: about, predicate: predicate)
        }
    }

    /// User-defined groups, by name: lists of selectors (any of them).
    public private(set) var user: [String: [Selector]] = [:]
    let extensions: Set<String>
    /// The CPUID extensions the policy chain trusts. Trusting an extension admits the forms
    /// that need nothing else untrusted: `trust: [vaes]` admits VEX VAESENC (AVX + VAES) only
    /// when AVX is trusted too, and never the EVEX form, which needs AVX-512.
    public internal(set) var trustedExtensions: Set<String> = []
    /// Form-level membership of each user group, computed once when the policy's groups are
    /// final (`PolicyLoader.analyzeGroups`): nested groups are not matched again for every form.
    var userMembers: [String: FormSet] = [:]
    /// The user groups with instance fields, directly or through a group they name.
    var conditionalUserGroups: Set<String> = []

    let databaseIdentity: ISADatabase

    public init(database: ISADatabase = .shared) {
        extensions = database === ISADatabase.shared ? Self.sharedExtensions : Set(database.forms.flatMap(\.cpuid))
        databaseIdentity = database
    }

    static let sharedExtensions = Set(ISADatabase.shared.forms.flatMap(\.cpuid))

    /// Built-in group membership of every form of the compiled-in database, computed once.
    static let builtinMembers: [String: [Bool]] = Dictionary(uniqueKeysWithValues: builtins.map { group in
        (group.name, ISADatabase.shared.forms.map(group.contains))
    })

    public func isKnown(_ name: String) -> Bool {
        user[name] != nil || Self.builtinByName[name] != nil || extensions.contains(Self.extensionName(name))
    }

    public var knownNames: [String] {
        Array(user.keys) + Self.builtins.map(\.name) + extensions.sorted()
    }

    mutating func define(_ name: String, _ selectors: [Selector]) { user[name] = selectors }

    /// Form-level: whether some encoding of the form can be in the group.
    /// (Groups that name each other in a cycle are rejected when the policy is read.)
    func mayContain(_ form: Form, group name: String, trusting: Bool = false) -> Bool {
        if let members = userMembers[name] { return members.contains(form.index) }
        if let selectors = user[name] {
            return selectors.contains { $0.matchesForm(form, groups: self) }
        }
        if let members = Self.builtinMembers[name], form.index < members.count, ISADatabase.shared === databaseIdentity {
            return members[form.index]
        }
        if let builtin = Self.builtinByName[name] { return builtin.contains(form) }
        let feature = Self.extensionName(name)
        guard form.cpuid.contains(feature) else { return false }
        return !trusting || form.cpuid.allSatisfy { trustedExtensions.contains($0) || Self.integerCore.contains($0) }
    }

    /// Form-level membership of every form of `database`, the name looked up once.
    func members(_ name: String, trusting: Bool, in database: ISADatabase) -> [Bool] {
        if let members = userMembers[name] { return database.forms.map { members.contains($0.index) } }
        if user[name] != nil { return database.forms.map { mayContain($0, group: name, trusting: trusting) } }
        if let members = Self.builtinMembers[name], database === ISADatabase.shared { return members }
        if let builtin = Self.builtinByName[name] { return database.forms.map(builtin.contains) }
        let feature = Self.extensionName(name)
        let core = Self.integerCore, trusted = trustedExtensions
        return database.forms.map { form in
            form.cpuid.contains(feature) && (!trusting || form.cpuid.allSatisfy { trusted.contains($0) || core.contains($0) })
        }
    }

    /// Instance-level: whether this encoding is in the group.
    func contains(_ insn: Instruction, _ form: Form, group name: String, decoder: Decoder) -> Bool {
        // A group without instance fields holds whole forms: its form-level membership decides.
        guard let selectors = user[name], userMembers[name] == nil || conditionalUserGroups.contains(name) else {
            return mayContain(form, group: name)
        }
        return selectors.contains {
            $0.matchesForm(form, groups: self) && $0.matchesInstance(insn, form, decoder: decoder, groups: self)
        }
    }

    /// CPUID extensions are written as the database spells them, with '.' for '_' allowed
    /// (`sse4.1` is `sse4_1`).
    static func extensionName(_ name: String) -> String {
        String(name.lowercased().map { $0 == "." || $0 == "-" ? "_" : $0 })
    }

    // MARK: - Built-in semantic groups

    static let integerCore: Set<String> = ["intel8086", "intel186", "intel286", "intel386", "intel486", "x64", "cmov", "cx8",
                                           "cmpxchg16b", "multibytenop", "pause", "cpuid"]
    static let x87Features: Set<String> = ["fpu", "fpu287", "fpu387"]
    /// Cache-line flushes, write-backs, demotes and prefetches. Whole-cache invalidation (INVD,
    /// WBINVD, WBNOINVD) is privileged and belongs to `system`, never to this group.
    static let cacheControl: Set<String> = ["clflush", "clflushopt", "clwb", "cldemote", "clzero", "prefetchnta", "prefetcht0",
                                            "prefetcht1", "prefetcht2", "prefetchw", "prefetchwt1", "prefetch", "prefetchit0",
                                            "prefetchit1"]
    /// Time-stamp counters. RDPMC reads performance counters: `perf-counters`.
    static let timers: Set<String> = ["rdtsc", "rdtscp", "rdpru"]
    static let segmentRegisters: Set<String> = ["cs", "ds", "es", "fs", "gs", "ss"]

    /// Legacy 0F 00-03, the system opcode groups: SLDT/STR/LLDT/LTR/VERR/VERW (0F 00),
    /// SGDT/SIDT/LGDT/LIDT/SMSW/LMSW/INVLPG and the 0F 01 register forms, LAR (0F 02), LSL (0F 03).
    /// Nothing there is integer work; a form added to these opcodes later stays out of `base`.
    static func inSystemOpcodeSpace(_ f: Form) -> Bool {
        f.encoding == .legacy && f.map == .map0F && f.opcode <= 0x03
    }

    /// Whether the form names a segment, control or debug register, as an operand or implicitly
    /// (MOV Sreg, PUSH FS, SMSW's CR0): state that is not the program's own.
    static func touchesMachineRegisters(_ f: Form) -> Bool {
        f.operands.contains { [.segment, .control, .debug].contains($0.kind.registerClass) }
            || f.implicitRegisters.contains { r in
                segmentRegisters.contains(r.register) || r.register.hasPrefix("cr") || r.register.hasPrefix("dr")
            }
    }

    /// PUSHF/POPF in every operand size (9C, 9D): the whole flags image, IF, IOPL, AC, TF and ID
    /// included. LAHF/SAHF move only the arithmetic flags and stay in `base`.
    static func movesFlagsImage(_ f: Form) -> Bool {
        f.encoding == .legacy && f.map == .oneByte && (f.opcode == 0x9C || f.opcode == 0x9D)
    }

    public static let builtins: [BuiltinGroup] = [
        // Reserved NOPs (0F 0D, 0F 18-1F hint space) are left out: CPUs give them meanings (MPX's
        // BNDSTX stores to memory on Skylake; 0F 1E FA became ENDBR64), and compilers never emit them.
        // Each exclusion is a database fact (class, opcode space, register operand), so a form nobody
        // listed by name falls outside `base` when it touches machine state.
        BuiltinGroup.make(name: "base", about: "the unprivileged integer core of x86-64: no privileged, I/O, far, reserved-NOP, descriptor-table, segment-register, flags-image, timer or performance-counter forms") { f in
            f.encoding == .legacy && !f.cpuid.isEmpty && f.cpuid.allSatisfy(integerCore.contains)
                && f.classes.isDisjoint(with: [.privileged, .io, .far, .segmentLoad, .reservedNop])
                && f.flow != .int && !f.mnemonic.hasPrefix("sys") && !timers.contains(f.mnemonic)
                && !inSystemOpcodeSpace(f) && !touchesMachineRegisters(f) && !movesFlagsImage(f)
        },
        BuiltinGroup.make(name: "x87", about: "the x87 floating-point unit") { f in
            !f.classes.contains(.privileged) && !Set(f.cpuid).isDisjoint(with: x87Features)
        },
        BuiltinGroup.make(name: "mmx", about: "MMX integer SIMD") { f in f.cpuid.contains("mmx") },
        BuiltinGroup.make(name: "system", about: "privileged (CPL0) forms, whole-cache invalidation (INVD, WBINVD, WBNOINVD) included") { f in
            f.classes.contains(.privileged)
        },
        BuiltinGroup.make(name: "descriptor-tables", about: "unprivileged reads and checks of descriptor tables and the machine status word: SGDT, SIDT, SLDT, STR, SMSW, LAR, LSL, VERR, VERW (legacy 0F 00-03 without a CPUID feature of their own)") { f in
            inSystemOpcodeSpace(f) && !f.classes.contains(.privileged) && f.cpuid.allSatisfy(integerCore.contains)
        },
        BuiltinGroup.make(name: "flags-image", about: "PUSHF/POPF in every operand size: the whole RFLAGS image (IF, IOPL, AC, TF, ID), not only the arithmetic flags") { f in
            movesFlagsImage(f)
        },
        BuiltinGroup.make(name: "cache-control", about: "cache flushes, write-backs, demotes and prefetches") { f in
            cacheControl.contains(f.mnemonic)
        },
        BuiltinGroup.make(name: "non-temporal", about: "non-temporal (cache-bypassing) loads and stores") { f in
            f.classes.contains(.nonTemporal) || f.mnemonic.hasPrefix("maskmov") || f.mnemonic == "vmaskmovdqu"
        },
        BuiltinGroup.make(name: "timers", about: "time-stamp counters: RDTSC, RDTSCP, RDPRU") { f in timers.contains(f.mnemonic) },
        BuiltinGroup.make(name: "perf-counters", about: "performance-monitoring counters: RDPMC") { f in
            f.cpuid.contains("rdpmc") || f.mnemonic == "rdpmc"
        },
        BuiltinGroup.make(name: "rng", about: "hardware random numbers") { f in f.mnemonic == "rdrand" || f.mnemonic == "rdseed" },
        BuiltinGroup.make(name: "tsx", about: "transactional memory: RTM, HLE, TSXLDTRK") { f in
            !Set(f.cpuid).isDisjoint(with: ["rtm", "hle", "tsxldtrk", "hle_or_rtm"])
        },
        BuiltinGroup.make(name: "user-wait", about: "user-level monitor and wait: WAITPKG, MONITORX/MWAITX") { f in
            ["umonitor", "umwait", "tpause", "monitorx", "mwaitx"].contains(f.mnemonic)
        },
        BuiltinGroup.make(name: "gather", about: "VSIB gathers") { f in f.classes.contains(.gather) },
        BuiltinGroup.make(name: "scatter", about: "VSIB scatters") { f in f.classes.contains(.scatter) },
        BuiltinGroup.make(name: "far-transfer", about: "far jumps, calls and returns") { f in f.classes.contains(.far) },
        BuiltinGroup.make(name: "string", about: "string instructions") { f in f.classes.contains(.string) },
        BuiltinGroup.make(name: "segment", about: "segment-register access: MOV to/from Sreg, PUSH/POP of segment registers, LFS/LGS/LSS, FS/GS base reads and writes") { f in
            f.classes.contains(.segmentLoad) || f.operands.contains { $0.kind.registerClass == .segment }
                || f.cpuid.contains("fsgsbase")
                || (f.classes.isDisjoint(with: [.privileged, .far]) && f.implicitRegisters.contains { segmentRegisters.contains($0.register) })
        },
        BuiltinGroup.make(name: "sgx", about: "SGX enclave instructions") { f in f.cpuid.contains { $0.hasPrefix("sgx") } },
        BuiltinGroup.make(name: "vendor-amd", about: "AMD-only families (XOP, FMA4, TBM, 3DNow!, SSE4a, ...)") { f in f.vendor == .amd },
        BuiltinGroup.make(name: "vendor-via", about: "VIA PadLock") { f in f.vendor == .via },
    ]

    static let builtinByName: [String: BuiltinGroup] = Dictionary(uniqueKeysWithValues: builtins.map { ($0.name, $0) })
}
