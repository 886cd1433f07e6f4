import Foundation

/// Runs a program under Valgrind's lackey tool and converts its stream on the fly: Valgrind writes
/// to a pipe (its stderr), the converter reads it in 1 MiB chunks; the text never touches the disk.
public enum LackeyRecorder {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// Records `command` (resolved by `QEMURecorder.resolve`) into `converter`'s sink; returns how
    /// the program ended (Valgrind passes its exit status through). Valgrind follows `execve`
    /// (`--trace-children=yes`), so a wrapper script's program is recorded too. SIGINT, SIGTERM and
    /// SIGHUP sent to thpsim stop the program, and what was recorded stays convertible.
    /// `progress` is called about once a second with the converter's state.
    /// The program's stdout is inherited; its stderr is mixed into Valgrind's stream and skipped.
    public static func record<Sink: WorkloadSink>(
        _ command: [String], valgrind: String = "valgrind", into converter: inout LackeyConverter<Sink>,
        progress: ((LackeyConverter<Sink>) -> Void)? = nil
    ) throws(Failure) -> ProgramExit {
        guard !command.isEmpty else { throw Failure(description: "no command to record") }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [valgrind, "--tool=lackey", "--trace-mem=yes", "--trace-syscalls=yes", "--trace-children=yes",
                             "--log-fd=2"] + command
        let pipe = Pipe()
        process.standardError = pipe
        do { try process.run() } catch {
            throw Failure(description: "cannot start \(valgrind): \(error)")
        }
        let stopper = Stopper(pid: process.processIdentifier)
        defer { stopper.cancel() }
        let fd = pipe.fileHandleForReading.fileDescriptor
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var lastReport = Date()
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            buffer.withUnsafeBytes { converter.feed(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            if let progress, Date().timeIntervalSince(lastReport) >= 1 {
                progress(converter)
                lastReport = Date()
            }
        }
        process.waitUntilExit()
        stopper.exited()
        var exit = ProgramExit()
        if process.terminationReason == .uncaughtSignal { exit.signal = process.terminationStatus } else { exit.status = process.terminationStatus }
        exit.interrupted = stopper.wasInterrupted
        if converter.accesses == 0 && !exit.interrupted {
            throw Failure(description: "\(valgrind) produced no lackey records (\(exit.description)); its messages are above")
        }
        return exit
    }
}
