import Foundation
import Testing

/// The command line as a hostile user, or a hostile machine, meets it (DESIGN §12): concurrent
/// edits, full disks, pre-created temporary paths, damaged ELF files, huge and deeply nested
/// policies, unbounded outputs. Every case asserts the exit status as well as the effect.
/// The cases live in nested suites, one file per area, beside this one.
@Suite struct HostileInputTests {}
