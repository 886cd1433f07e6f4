import Foundation
import Synchronization
import Workloads
import Simulation

/// Runs cells of a grid on one stream of records as it arrives (`thpsim record --replay`): each cell
/// decodes the stream on a host thread of its own, so a recorded program is compared under every
/// policy without its trace being stored, and the cells use the cores QEMU leaves.
public final class StreamedRun: Sendable {
    private let group = DispatchGroup()
    private let results: Mutex<[Int: Result<CellResult, ExperimentError>]>
    /// The runner the cells were prepared by (`cellCacheThread` set for them).
    let runner: ExperimentRunner
    private let cells: [ExperimentCell]

    /// What the stream's bytes are.
    public enum Format: Sendable {
        /// The capture plugin's stream: blocks and messages, no header (`TraceReader(stream:)`).
        case captureStream
        /// A whole trace file's bytes, header to end marker (the lackey recorder writes these).
        case traceFile
    }

    /// Starts `cells`, cell `i` reading `inputs[i]`; a cell whose stream is bad cancels `broadcast`.
    /// Messages in the stream go to `onMessage` (from the first cell's reader only).
    public init(runner: ExperimentRunner, cells: [ExperimentCell], inputs: [CaptureBroadcast.Input], format: Format,
                broadcast: CaptureBroadcast, onMessage: (@Sendable (String) -> Void)? = nil) throws(ExperimentError) {
        precondition(cells.count == inputs.count)
        // Every cell runs at once on a thread of its own: a cache thread only for a lone cell.
        var runner = runner
        runner.cellCacheThread = runner.cellCacheThread(hostThreads: cells.count)
        self.runner = runner
        self.cells = cells
        results = Mutex([:])
        var prepared: [ExperimentRunner.PreparedCell] = []
        for cell in cells { prepared.append(try runner.prepare(cell)) }
        for (i, p) in prepared.enumerated() {
            let input = inputs[i]
            let job = UncheckedBox(p)
            group.enter()
            Thread.detachNewThread { [self] in
                let outcome: Result<CellResult, ExperimentError>
                do throws(TraceError) {
                    var reader = try format == .captureStream ? TraceReader(stream: input) : TraceReader(input: input)
                    if i == 0 { reader.onMessage = onMessage }
                    var executor = job.value.executor
                    let records = try reader.replay(into: &executor)
                    outcome = .success(job.value.result(records: records))
                } catch {
                    broadcast.cancel()
                    outcome = .failure(ExperimentError("the capture stream: \(error)"))
                }
                self.results.withLock { $0[i] = outcome }
                group.leave()
            }
        }
    }

    /// Waits for every cell and returns the report, results in cell order.
    public func wait(shard: ExperimentReport.Shard? = nil) throws(ExperimentError) -> ExperimentReport {
        group.wait()
        return try runner.report(results.withLock { $0 }, count: cells.count, shard: shard)
    }
}

/// Moves a value that is used by one thread at a time to that thread.
package struct UncheckedBox<T>: @unchecked Sendable {
    package var value: T
    package init(_ value: T) { self.value = value }
}
