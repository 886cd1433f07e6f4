import Testing
import Foundation
import VMCore
import Kernel
@testable import Workloads
import Simulation

func convert(_ text: String, chunk: Int = 7) -> (Recorder, LackeyConverter<Recorder>) {
    var c = LackeyConverter(sink: Recorder())
    let bytes = Array(text.utf8)
    var i = 0
    while i < bytes.count {   // small chunks: lines cut across chunks must survive
        let j = min(bytes.count, i + chunk)
        bytes[i..<j].withUnsafeBytes { c.feed($0) }
        i = j
    }
    return (c.finish(), c)
}

let valgrindPath = ["/usr/bin/valgrind", "/usr/local/bin/valgrind"].first { FileManager.default.isExecutableFile(atPath: $0) }

@Suite("Lackey conversion and recording")
struct LackeyTests {
    @Test("an asynchronous call's result line completes it (Valgrind 3.19 prints madvise so)")
    func asynchronousCalls() {
        let text = """
        SYSCALL[7,1](9) sys_mmap ( 0x0, 8388608, 3, 34, 4294967295, 0 ) --> [pre-success] Success(0x4a2a000)
        SYSCALL[7,1](28) sys_madvise ( 0x4a2a000, 8388608, 14 ) --> [async] ...
        SYSCALL[7,2](28) sys_madvise ( 0x4a2a000, 4096, 4 ) --> [async] ...
        SYSCALL[7,2](28) ... [async] --> Failure(0x16)
        SYSCALL[7,1](28) ... [async] --> Success(0x0)
        """
        let (r, c) = convert(text)
        #expect(r.items == [
            .event(0, .mmap(address: 0x4a2a000, length: 8 << 20, protection: .readWrite, shared: false)),
            .event(0, .madvise(address: 0x4a2a000, length: 8 << 20, advice: .hugepage)),
        ])
        #expect(c.systemCalls == 2)
    }

    @Test("lackey records become accesses; untraced pages are mapped before first use; brk becomes mappings")
    func conversion() {
        let text = """
        ==1== Lackey, an example Valgrind tool
        I  0401ab70,3
         S 1fff000678,8
         L 1fff000670,8
         M 1fff000ffc,8
        SYSCALL[1,1](12) sys_brk ( 0x0 ) --> [pre-success] Success(0x4035000)
        SYSCALL[1,1](12) sys_brk ( 0x4056000 ) --> [pre-success] Success(0x4056000)
         S 04040008,8
        SYSCALL[1,1](9) sys_mmap ( 0x0, 8192, 3, 34, 4294967295, 0 ) --> [pre-success] Success(0x4835000)
        SYSCALL[1,1](257) sys_openat ( 4294967196, 0x4034bb0(/x), 524288 ) --> [async] ...
        SYSCALL[1,1](28) sys_madvise ( 0x4835000, 8192, 14 ) --> [pre-success] Success(0x0)
        SYSCALL[1,1](11) sys_munmap ( 0x4835000, 8192 )[sync] --> Success(0x0)
         L 04835010,4
        program output that is not a record
        """
        let (r, c) = convert(text)
        typealias Run = Recorder.Run
        let expected: [Recorder.Item] = [
            .event(0, .mmap(address: 0x401a000, length: 4096, protection: [.read, .write, .execute], shared: false)),
            .run(Run(thread: 0, page: 0x401a, kind: .fetch, count: 1)),
            .event(0, .mmap(address: 0x1fff000000, length: 4096, protection: [.read, .write, .execute], shared: false)),
            .run(Run(thread: 0, page: 0x1fff000, kind: .store, count: 1)),
            .run(Run(thread: 0, page: 0x1fff000, kind: .load, count: 2)),
            .run(Run(thread: 0, page: 0x1fff000, kind: .store, count: 1)),
            .event(0, .mmap(address: 0x1fff001000, length: 4096, protection: [.read, .write, .execute], shared: false)),
            .run(Run(thread: 0, page: 0x1fff001, kind: .load, count: 1)),
            .run(Run(thread: 0, page: 0x1fff001, kind: .store, count: 1)),
            .event(0, .mmap(address: 0x4035000, length: 0x21000, protection: .readWrite, shared: false)),
            .run(Run(thread: 0, page: 0x4040, kind: .store, count: 1)),
            .event(0, .mmap(address: 0x4835000, length: 8192, protection: .readWrite, shared: false)),
            .event(0, .madvise(address: 0x4835000, length: 8192, advice: .hugepage)),
            .event(0, .munmap(address: 0x4835000, length: 8192)),
            .run(Run(thread: 0, page: 0x4835, kind: .load, count: 1)),   // unmapped by the program: no implicit page
        ]
        #expect(r.items == expected)
        #expect(c.implicitPages == 3 && c.systemCalls == 4 && c.accesses == 9)
    }

    // The limit guards against a hang, not a slow host: under `.ci/run`'s full-length parallel suite
    // this recording (0.6 s alone) once took over a minute.
    @Test("recording /bin/true under Valgrind and replaying it: no signal, its calls and fetches replayed",
          .enabled(if: valgrindPath != nil, "valgrind is not installed"), .timeLimit(.minutes(5)))
    func recordAndReplay() throws {
        var converter = LackeyConverter(sink: try TraceWriter(output: TraceBytes()))
        let status = try LackeyRecorder.record(["/bin/true"], valgrind: valgrindPath!, into: &converter)
        #expect(status.status == 0)
        #expect(converter.systemCalls > 3 && converter.accesses > 10_000)
        var writer = converter.finish()
        let bytes = try writer.finish().bytes
        #expect(bytes.count < converter.bytes / 20, "the trace is far smaller than lackey's text")

        var setup = SystemBuilder(); setup.memoryBytes = 128 << 20
        let executor = try setup.makeExecutor()
        var reader = try TraceReader(input: TraceBytes(bytes))
        let records = try reader.replay(on: executor)
        let report = executor.finish()
        #expect(records == writer.records)
        #expect(report.signals.isEmpty, "\(report.signals)")
        #expect(report.accesses.reduce(0, +) == converter.accesses)
        #expect(report.accesses[2] > 0 && report.total.faults > 10)
    }
}
