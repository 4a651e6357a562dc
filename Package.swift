// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Sieve",
    products: [
        .executable(name: "sieve", targets: ["SieveCLI"]),
        .library(name: "X86", targets: ["X86"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // System libraries: module map + shim header, flags from pkg-config.
        .systemLibrary(name: "CYaml", path: "Sources/CYaml", pkgConfig: "yaml-0.1",
                       providers: [.apt(["libyaml-dev"])]),
        .systemLibrary(name: "CCapstone", path: "Sources/CCapstone", pkgConfig: "capstone",
                       providers: [.apt(["libcapstone-dev"])]),
        // An oracle for tests and a yardstick for the benchmark: Debian's libzydis-dev ships no
        // .pc file, so the module map links it.
        .systemLibrary(name: "CZydis", path: "Sources/CZydis", providers: [.apt(["libzydis-dev"])]),

        // The ISA database, the strict decoder and ELF code extraction. Knows nothing of policies.
        .target(name: "X86", exclude: ["Database"]),
        // YAML policies with source positions, selectors, groups, resolution to an AcceptedSet, lint.
        .target(name: "Policy", dependencies: ["X86", "CYaml"]),
        // The trusted C99 core: the decoder and the sandbox rules, once, over tables read through one struct.
        .target(name: "SieveCore"),
        // Policy → tables (every operand classified by the sandbox model), running the core, findings.
        .target(name: "Verifier", dependencies: ["X86", "Policy", "SieveCore"]),
        // The standalone C verifier: tables from a compiled policy above a fixed C core.
        .target(name: "Codegen", dependencies: ["Verifier", "Policy", "X86"]),
        // Turing-completeness: capabilities, the universal machines, witnesses, negative lemmas.
        .target(name: "Analysis", dependencies: ["Verifier", "Policy", "X86"]),
        // The independent, slow specification of the sandbox invariant: Zydis decodes, a small abstract
        // interpreter judges. Shares no table or code with X86, Policy, Verifier or Codegen.
        .target(name: "Specification", dependencies: ["CZydis"]),
        // Human-readable instruction text through capstone, Sieve's own rendering where capstone fails.
        .target(name: "Disassembly", dependencies: ["X86", "CCapstone"]),
        .executableTarget(name: "SieveCLI", dependencies: [
            "X86", "Disassembly", "Policy", "Verifier", "Codegen", "Analysis", "CZydis",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], path: "Sources/SieveCLI"),

        // Scripts/bench-decoder: Sieve's decoder against Zydis and capstone on real code.
        .executableTarget(name: "DecoderBenchmark", dependencies: ["X86", "CZydis", "CCapstone"]),

        .testTarget(name: "X86Tests", dependencies: ["X86", "Disassembly", "CZydis", "CCapstone"],
                    exclude: ["Fixtures"]),
        .testTarget(name: "PolicyTests", dependencies: ["Policy", "X86"]),
        .testTarget(name: "VerifierTests", dependencies: ["Verifier", "Codegen", "Policy", "X86", "CZydis", "SieveCore"], exclude: ["Corpus", "Fixtures"]),
        .testTarget(name: "SieveCLITests", dependencies: ["SieveCLI"], exclude: ["Fixtures"]),
        .testTarget(name: "SpecificationTests", dependencies: ["Specification", "Verifier", "Policy", "X86"]),
        .testTarget(name: "AnalysisTests", dependencies: ["Analysis", "Verifier", "Codegen", "Policy", "X86"]),
    ]
)
