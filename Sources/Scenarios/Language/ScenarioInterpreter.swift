/// Runs a parsed scenario on one backend, keeping the data shadow and evaluating expectations.
///
/// The interpreter owns everything both backends share, so they behave alike: 2 MiB alignment of
/// `mmap` (map 2 MiB more, then trim head and tail with `munmap`), region names, the write
/// pattern, the shadow, and the rule that a call that fails or a touch that faults must be
/// followed by `expect result` / `expect segv`, or it counts as a failure.
final class ScenarioInterpreter<Backend: ScenarioBackend> {
    static var hugeSize: UInt64 { 2 << 20 }

    /// A region name's binding in one process.
    enum Region {
        case address(UInt64)
        /// The `mmap` at this line failed, so the name has no address.
        case failed(line: Int)
    }

    struct ProcessState {
        var handle: Backend.Process
        var regions: [String: Region] = [:]
        var shadow = ShadowAddressSpace()
    }

    /// The outcome of the last call or touch, until an `expect` consumes it.
    enum Outcome {
        case call(Result<Void, ScenarioErrno>)
        case touch(TouchOutcome)
    }

    let scenario: Scenario
    let backend: Backend
    var processes: [String: ProcessState] = [:]
    var current: String? = "parent"
    var writeCount: UInt64 = 0
    var lastCall: Result<Void, ScenarioErrno>?
    var lastTouch: TouchOutcome?
    /// A failed call or faulting touch whose next statement has not been seen yet.
    var unchecked: (Statement, Outcome)?
    var vmstatBase: [String: Int64] = [:]
    var meminfoBase: [String: Int64] = [:]
    /// Memory cgroups created so far.
    var cgroups: Set<String> = []
    /// Processes a cgroup's OOM killer killed, with the line that was running then.
    var killed: [String: Int] = [:]
    /// Set once a command could not run here: every later expectation is skipped with this reason.
    var skipReason: String?
    var report: ScenarioReport

    init(scenario: Scenario, backend: Backend) {
        self.scenario = scenario
        self.backend = backend
        self.report = ScenarioReport(file: scenario.file, backend: backend.name)
    }

    /// Runs every statement and returns the report; the backend is finished on return.
    func run() -> ScenarioReport {
        do {
            processes["parent"] = ProcessState(handle: try backend.start(scenario))
        } catch {
            backend.finish()
            if error.kind == .unsupported { report.skipReason = error.message } else { report.error = error }
            skipRemaining(from: 0, reason: error.message)
            return report
        }
        defer { backend.finish() }
        do {
            try takeBaselines()
        } catch {
            report.error = error
            skipRemaining(from: 0, reason: "not reached: \(error.message)")
            return report
        }
        for (i, statement) in scenario.statements.enumerated() {
            checkUnexpectedOutcome(before: statement)
            do {
                try execute(statement)
            } catch {
                let located = error.located(at: statement.location)
                if located.kind == .unsupported {
                    if skipReason == nil {
                        skipReason = "line \(statement.location.line) (\(statement.text)) could not run on \(backend.name): \(located.message)"
                        report.notes.append(skipReason!)
                    }
                    if case .expect = statement.command { skipRemaining(from: i, through: i, reason: skipReason!) }
                    continue
                }
                report.error = located
                skipRemaining(from: i, reason: "not reached: the run stopped at line \(statement.location.line)")
                return report
            }
        }
        checkUnexpectedOutcome(before: nil)
        return report
    }

    // MARK: Statements

    func execute(_ statement: Statement) throws(ScenarioError) {
        let location = statement.location
        switch statement.command {
        case .design, .memory, .swap:
            return
        case .cgroupMount(let options):
            try backend.mountCgroups(options: options)
        case .set(let knobs):
            for knob in knobs { try backend.setTunable(knob) }
        case .mmap(let request):
            try mmap(request, location: location)
        case .madvise(let a, let length, let advice):
            let address = try resolve(a)
            let result = try backend.madvise(in: handle(), address: address, length: length, advice: advice)
            if case .success = result {
                switch advice {
                case .dontneed: processes[current!]!.shadow.discard(start: address, length: length)
                case .dontfork, .dofork: processes[current!]!.shadow.setDontfork(advice == .dontfork, start: address, length: length)
                default: break
                }
            }
            called(result, statement)
        case .write(let a, let length, nil):
            let address = try resolve(a)
            writeCount += 1
            let pattern = DataPattern(sequence: writeCount, firstOffset: UInt64(bitPattern: a.offset))
            let outcome = try backend.touch(in: handle(), address: address, length: length, access: .write(pattern))
            let written: UInt64 = switch outcome {
            case .segv(let at), .killed(let at): at > address ? min(at - address, length) : 0
            case .completed: length
            }
            processes[current!]!.shadow.write(start: address, length: written, pattern: pattern)
            try touched(outcome, statement)
        case .write(let a, let length, let stride?):
            // One byte every `stride` bytes, each a touch of its own, so both backends see the same stores.
            let address = try resolve(a)
            writeCount += 1
            var offset: UInt64 = 0
            var outcome = TouchOutcome.completed
            while offset < length {
                let pattern = DataPattern(sequence: writeCount, firstOffset: UInt64(bitPattern: a.offset) &+ offset)
                outcome = try backend.touch(in: handle(), address: address + offset, length: 1, access: .write(pattern))
                guard case .completed = outcome else { break }
                processes[current!]!.shadow.write(start: address + offset, length: 1, pattern: pattern)
                offset += stride
            }
            try touched(outcome, statement)
        case .read(let a, let length):
            let outcome = try backend.touch(in: handle(), address: try resolve(a), length: length, access: .read)
            try touched(outcome, statement)
        case .munmap(let a, let length):
            let address = try resolve(a)
            let result = try backend.munmap(in: handle(), address: address, length: length)
            if case .success = result { processes[current!]!.shadow.unmap(start: address, length: length) }
            called(result, statement)
        case .mprotect(let a, let length, let protection):
            let result = try backend.mprotect(in: handle(), address: try resolve(a), length: length, protection: protection)
            called(result, statement)
        case .mremap(let a, let oldLength, let newLength, let to):
            try mremap(a, oldLength: oldLength, newLength: newLength, to: to, statement: statement)
        case .fork(let name):
            _ = try handle()
            let parent = processes[current!]!
            let result = try backend.fork(parent.handle)
            if case .success(let child) = result {
                processes[name] = ProcessState(handle: child, regions: parent.regions, shadow: parent.shadow.forked())
            }
            called(result.map { _ in () }, statement)
        case .on(let name):
            guard processes[name] != nil else { throw .run("process '\(name)' does not exist: its fork failed") }
            current = name
        case .exit:
            let process = current!
            current = nil
            try backend.exit(processes.removeValue(forKey: process)!.handle)
        case .khugepaged(let scans):
            try backend.runKhugepaged(fullScans: scans)
        case .split(let a, let length):
            try backend.split(in: handle(), address: try resolve(a), length: length)
        case .pin(let a, let length):
            called(try backend.pin(in: handle(), address: try resolve(a), length: length), statement)
        case .unpin(let a, let length):
            try backend.unpin(in: handle(), address: try resolve(a), length: length)
        case .mark:
            try takeBaselines()
        case .cgroup(let name, let writes):
            var result: Result<Void, ScenarioErrno> = .success(())
            if !cgroups.contains(name) {
                result = try backend.createCgroup(name)
                if case .success = result { cgroups.insert(name) }
            }
            for write in writes {
                guard case .success = result else { break }
                result = try backend.writeCgroup(name, file: write.name, value: write.value)
            }
            called(result, statement)
            // Lowering memory.max may have called the OOM killer.
            try noteKills(statement)
        case .inCgroup(let name):
            called(try backend.joinCgroup(handle(), name == CgroupFiles.rootName ? nil : name), statement)
        case .oomScoreAdj(let value):
            called(try backend.setOOMScoreAdj(handle(), value), statement)
        case .rmdirCgroup(let name):
            let result = try backend.removeCgroup(name)
            if case .success = result { cgroups.remove(name) }
            called(result, statement)
        case .expect(let expectation):
            if let skipReason {
                skip(statement, reason: skipReason)
                return
            }
            try evaluate(expectation, statement: statement)
            if case .killed(let name) = expectation, name == nil || name == current { current = nil }
        }
    }

    /// `mmap`, aligned to 2 MiB unless `align=4K` or `at=`: if the kernel's choice is not aligned,
    /// map 2 MiB more and trim both ends, so the model and Linux see the same calls.
    func mmap(_ request: MmapRequest, location: SourceLocation) throws(ScenarioError) {
        let process = try handle()
        let fixed = try request.fixedAddress.map { a throws(ScenarioError) in try resolve(a) }
        var result = try backend.mmap(in: process, address: fixed, length: request.length,
                                      protection: request.protection, shared: request.shared, stack: request.stack)
        if case .success(let start) = result, fixed == nil, request.hugeAligned, start % Self.hugeSize != 0,
           request.length < 1 << 56 {
            let length = ShadowAddressSpace.pageRound(request.length)
            try housekeeping(backend.munmap(in: process, address: start, length: length), "unmap the unaligned mapping")
            result = try backend.mmap(in: process, address: nil, length: length + Self.hugeSize,
                                      protection: request.protection, shared: request.shared, stack: request.stack)
            if case .success(let wide) = result {
                let aligned = (wide + Self.hugeSize - 1) & ~(Self.hugeSize - 1)
                if aligned > wide {
                    try housekeeping(backend.munmap(in: process, address: wide, length: aligned - wide), "trim below the aligned start")
                }
                let tail = wide + length + Self.hugeSize - (aligned + length)
                if tail > 0 {
                    try housekeeping(backend.munmap(in: process, address: aligned + length, length: tail), "trim above the aligned end")
                }
                result = .success(aligned)
            }
        }
        switch result {
        case .success(let start):
            processes[current!]!.regions[request.name] = .address(start)
            processes[current!]!.shadow.map(start: start, length: request.length, shared: request.shared)
        case .failure:
            processes[current!]!.regions[request.name] = .failed(line: location.line)
        }
        called(result.map { _ in () }, Statement(location: location, text: "mmap \(request.name)", command: .mmap(request)))
    }

    func mremap(_ a: AddressExpression, oldLength: UInt64, newLength: UInt64, to: AddressExpression?,
                statement: Statement) throws(ScenarioError) {
        let old = try resolve(a)
        let destination = try to.map { d throws(ScenarioError) in try resolve(d) }
        let result = try backend.mremap(in: handle(), address: old, oldLength: oldLength, newLength: newLength,
                                        destination: destination)
        if case .success(let new) = result {
            processes[current!]!.shadow.move(old: old, oldLength: oldLength, newLength: newLength, to: new)
            // The rule: every name of this process whose base was the old address now names the new one.
            for (name, region) in processes[current!]!.regions {
                if case .address(old) = region { processes[current!]!.regions[name] = .address(new) }
            }
        }
        called(result.map { _ in () }, statement)
    }

    // MARK: Helpers

    /// The current process; an error once its cgroup's OOM killer killed it.
    func handle() throws(ScenarioError) -> Backend.Process {
        if let line = killed[current!] { throw .run("process '\(current!)' was killed by the OOM killer at line \(line)") }
        return processes[current!]!.handle
    }

    /// Records the processes a cgroup's OOM killer killed during `statement`.
    func noteKills(_ statement: Statement) throws(ScenarioError) {
        guard scenario.usesCgroups else { return }
        for (name, process) in processes where killed[name] == nil {
            if try backend.wasKilled(process.handle) { killed[name] = statement.location.line }
        }
    }

    /// The address an expression names in the current process.
    func resolve(_ a: AddressExpression) throws(ScenarioError) -> UInt64 {
        switch processes[current!]!.regions[a.region] {
        case .address(let base)?:
            let (sum, overflow) = Int64(bitPattern: base).addingReportingOverflow(a.offset)
            guard !overflow, sum >= 0 else { throw .run("address \(a) is outside the address space") }
            return UInt64(sum)
        case .failed(let line)?:
            throw .run("region '\(a.region)' has no address: its mmap at line \(line) failed")
        case nil:
            throw .run("undefined region '\(a.region)'")
        }
    }

    /// The interpreter's own calls (alignment trims) must succeed; a failure is the backend's fault.
    func housekeeping(_ result: Result<Void, ScenarioErrno>, _ what: String) throws(ScenarioError) {
        if case .failure(let errno) = result { throw .run("could not \(what): \(errno)") }
    }

    func called(_ result: Result<Void, ScenarioErrno>, _ statement: Statement) {
        lastCall = result
        if case .failure = result { unchecked = (statement, .call(result)) }
    }

    func touched(_ outcome: TouchOutcome, _ statement: Statement) throws(ScenarioError) {
        lastTouch = outcome
        switch outcome {
        case .segv, .killed: unchecked = (statement, .touch(outcome))
        case .completed: break
        }
        try noteKills(statement)
    }

    /// A failed call or a faulting touch must be followed by the `expect` that states it.
    func checkUnexpectedOutcome(before next: Statement?) {
        guard let (statement, outcome) = unchecked else { return }
        unchecked = nil
        switch (outcome, next?.command) {
        case (.call, .expect(.result)?), (.touch(.segv), .expect(.segv)?), (.touch(.killed), .expect(.killed)?): return
        default: break
        }
        let observed: String
        switch outcome {
        case .call(.failure(let errno)): observed = "failed with \(errno); add `expect result \(errno.name)` if intended"
        case .touch(.segv(let at)): observed = "segv at 0x\(String(at, radix: 16)); add `expect segv` if intended"
        case .touch(.killed(let at)): observed = "OOM-killed at 0x\(String(at, radix: 16)); add `expect killed` if intended"
        default: return
        }
        report.results.append(ExpectationResult(location: statement.location, index: 0, check: statement.text,
                                                status: skipReason == nil ? .failed : .skipped,
                                                expected: "success", observed: observed, reason: skipReason))
    }

    func takeBaselines() throws(ScenarioError) {
        let checks = scenario.statements.lazy.compactMap { s -> Expectation? in
            if case .expect(let e) = s.command { e } else { nil }
        }
        if checks.contains(where: { if case .vmstat = $0 { true } else { false } }) { vmstatBase = try backend.vmstat() }
        if checks.contains(where: { if case .meminfo = $0 { true } else { false } }) { meminfoBase = try backend.meminfo() }
    }
}
