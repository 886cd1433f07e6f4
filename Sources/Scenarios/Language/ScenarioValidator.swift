import VMCore

/// The static pass: checks names and order before anything runs, so a run never meets them.
///
/// It follows processes through `fork`, `on` and `exit`, and region names per process (a child
/// inherits its parent's names at `fork`). It also records `design` and `memory` in the scenario.
enum ScenarioValidator {
    /// The largest range `expect data` compares: both sides are held in memory.
    static let maximumDataCheck: UInt64 = 1 << 30
    /// The largest `swap` device (its slot bitmap is 32 MiB).
    static let maximumSwap: UInt64 = 1 << 40

    static func check(_ scenario: inout Scenario) throws(ScenarioError) {
        var state = State()
        for statement in scenario.statements {
            let location = statement.location
            func fail(_ message: String) -> ScenarioError { ScenarioError(message, at: location) }
            if state.sawOtherCommand, statement.command.isSetup {
                throw fail("'\(statement.command.keyword)' must come before every other command")
            }
            switch statement.command {
            case .design(let name):
                if scenario.design != nil { throw fail("design is given twice") }
                scenario.design = name
            case .memory(let bytes):
                if scenario.memoryBytes != nil { throw fail("memory is given twice") }
                guard bytes >= 2 << 20 else { throw fail("memory \(bytes) bytes is too small; give at least 2M") }
                scenario.memoryBytes = bytes
            case .swap(let request):
                if scenario.swap != nil { throw fail("swap is given twice") }
                guard request.bytes % 4096 == 0 else {
                    throw fail("swap \(ByteCount.human(request.bytes)) is not a multiple of 4K: a swap device holds whole 4 KiB pages (swap 0 means none)")
                }
                guard request.bytes <= ScenarioValidator.maximumSwap else {
                    throw fail("swap \(ByteCount.human(request.bytes)) is more than the model's largest device, \(ByteCount.human(ScenarioValidator.maximumSwap))")
                }
                scenario.swap = request
            case .cgroupMount:
                if state.sawCgroupMount { throw fail("cgroup-mount is given twice") }
                state.sawCgroupMount = true
            default:
                state.sawOtherCommand = true
                state.line = location.line
                try state.apply(statement.command, fail: fail)
            }
        }
        // A cgroup nobody joins, itself or below it, limits nothing: say so where it was declared.
        let idle = state.cgroups.filter { name, _ in !state.joined.contains { $0 == name || $0.hasPrefix(name + "/") } }
        if let (name, line) = idle.min(by: { $0.value < $1.value }) {
            throw ScenarioError("cgroup '\(name)' has no processes: no `in` line puts one there or below it, so its limits would apply to nothing",
                                at: SourceLocation(file: scenario.file, line: line))
        }
    }

    private struct State {
        var sawOtherCommand = false
        var sawCgroupMount = false
        /// Every process ever created, and the line where it was created (0 for `parent`).
        var processes: [String: Int] = ["parent": 0]
        /// Region names of each live process, with the line that defined them.
        var regions: [String: [String: Int]] = ["parent": [:]]
        var current: String? = "parent"
        var exitLine = 0
        var sawCall = false
        var sawTouch = false
        var line = 0
        /// Memory cgroups and the line that created each; the ones some process joined.
        var cgroups: [String: Int] = [:]
        var joined: Set<String> = []
        /// Cgroups an `rmdir` line may have removed (until a `cgroup` line makes them again).
        var removed: Set<String> = []

        mutating func apply(_ command: Command, fail: (String) -> ScenarioError) throws(ScenarioError) {
            switch command {
            case .design, .memory, .swap, .cgroupMount, .set, .khugepaged, .mark:
                return
            case .expect(.vmstat), .expect(.meminfo):
                return
            case .expect(.result):
                if !sawCall { throw fail("expect result: no system call before it to take the result of") }
                return
            case .expect(.segv):
                if !sawTouch { throw fail("expect segv: no read or write before it") }
                return
            case .cgroup(let name, _):
                if cgroups[name] == nil {
                    if let slash = name.lastIndex(of: "/") {
                        let parent = String(name[..<slash])
                        guard cgroups[parent] != nil else {
                            throw fail("cgroup \(name): its parent '\(parent)' is not made yet; add `cgroup \(parent)` before this line")
                        }
                        guard !joined.contains(parent) else {
                            throw fail("cgroup \(name): '\(parent)' has processes (an `in \(parent)` line), and cgroup v2 gives a cgroup with processes no children with the memory controller (Linux: EBUSY)")
                        }
                    }
                    cgroups[name] = line
                }
                removed.remove(name)
                sawCall = true
                return
            case .rmdirCgroup(let name):
                guard cgroups[name] != nil else { throw fail("rmdir: undefined cgroup '\(name)'; create it with `cgroup \(name)` first") }
                if let child = cgroups.keys.sorted().first(where: { $0.hasPrefix(name + "/") && !removed.contains($0) }) {
                    throw fail("rmdir \(name): '\(child)' is below it; remove that first (Linux: EBUSY)")
                }
                // Whether it goes is the run's answer (EBUSY while a process is in it): the name stays
                // known, a later `cgroup NAME` makes it again, and it no longer counts as a child.
                removed.insert(name)
                sawCall = true
                return
            case .expect(.cgroup(let name, _, _)):
                guard cgroups[name] != nil else { throw fail("expect cgroup: undefined cgroup '\(name)'; create it with `cgroup \(name) …` first") }
                return
            case .expect(.killed(let name?)):
                guard processes[name] != nil else { throw fail("expect killed: undefined process '\(name)'") }
                // The process is gone from here on.
                regions[name] = nil
                if current == name { current = nil }
                return
            case .on(let name):
                guard processes[name] != nil else { throw fail("on: undefined process '\(name)'") }
                guard regions[name] != nil else { throw fail("on: process '\(name)' has exited") }
                current = name
                return
            default:
                break
            }
            guard let process = current else {
                throw fail("no current process: '\(command.keyword)' follows an exit; pick a process with `on NAME`")
            }
            func need(_ address: AddressExpression) throws(ScenarioError) {
                if regions[process]?[address.region] == nil {
                    throw fail("undefined region '\(address.region)' in process '\(process)'; define it with mmap first")
                }
            }
            switch command {
            case .mmap(let request):
                if let at = request.fixedAddress { try need(at) }
                if regions[process]?[request.name] != nil {
                    throw fail("region '\(request.name)' is already defined in process '\(process)'")
                }
                regions[process]?[request.name] = 1
                sawCall = true
            case .madvise(let a, _, _), .munmap(let a, _), .mprotect(let a, _, _):
                try need(a)
                sawCall = true
            case .mremap(let a, _, _, let to):
                try need(a)
                if let to { try need(to) }
                sawCall = true
            case .write(let a, _, _), .read(let a, _):
                try need(a)
                sawTouch = true
            case .expect(.data(let a, let length)):
                try need(a)
                if length > ScenarioValidator.maximumDataCheck { throw fail("expect data: at most 1G can be compared at once") }
            case .split(let a, _), .expect(.smaps(let a, _)), .unpin(let a, _):
                try need(a)
            case .pin(let a, _):
                try need(a)
                sawCall = true
            case .fork(let child):
                if processes[child] != nil { throw fail("fork: process '\(child)' already exists") }
                processes[child] = 1
                regions[child] = regions[process]
                sawCall = true
            case .exit, .expect(.killed(nil)):
                regions[process] = nil
                current = nil
            case .inCgroup(let name):
                guard name == CgroupFiles.rootName || cgroups[name] != nil else {
                    throw fail("in: undefined cgroup '\(name)'; create it with `cgroup \(name) memory.max=…` first")
                }
                if let child = cgroups.keys.sorted().first(where: { $0.hasPrefix(name + "/") && !removed.contains($0) }) {
                    throw fail("in \(name): '\(name)' has a cgroup below it ('\(child)'), and cgroup v2 puts no processes in a cgroup whose children have the memory controller (Linux: EBUSY); join '\(child)' instead")
                }
                joined.insert(name)
                sawCall = true
            case .oomScoreAdj:
                sawCall = true
            default:
                break
            }
        }
    }
}

extension Command {
    /// `design`, `memory`, `swap` and `cgroup-mount`, which configure the system and must come first.
    var isSetup: Bool {
        switch self {
        case .design, .memory, .swap, .cgroupMount: true
        default: false
        }
    }
}
