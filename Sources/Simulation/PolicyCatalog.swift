import Kernel

/// The hugepage policies a command can name with `--policy`, each the kernel design whose mechanism it
/// runs on and the policy the kernel asks at its decision points (docs/policies.md). Linux's own
/// policies are their designs; a policy from elsewhere (FreeBSD, the research systems) runs on
/// Linux 6.18's mechanism unless it says otherwise.
public struct PolicyCatalog: Sendable {
    /// One named policy.
    public struct Entry: Sendable {
        /// The name `--policy` takes.
        public var name: String
        /// The design whose mechanism the policy runs on.
        public var design: KernelDesign
        /// The policy, or nil for the design's own (Linux's).
        public var policy: (any HugepagePolicy)?
        /// One line for `--help` and error messages.
        public var summary: String
        /// The policy's parameters, set with `--set NAME/KNOB=V1,V2` (docs/policies.md).
        public var knobs: [Knob]
        /// The policy with its knobs set to the values given (each knob given at most once, its value
        /// valid); nil for an entry without knobs, whose `policy` is used.
        public var configure: (@Sendable ([String: Int]) -> any HugepagePolicy)?

        public init(name: String, design: KernelDesign, policy: (any HugepagePolicy)?, summary: String,
                    knobs: [Knob] = [], configure: (@Sendable ([String: Int]) -> any HugepagePolicy)? = nil) {
            self.name = name; self.design = design; self.policy = policy; self.summary = summary
            self.knobs = knobs; self.configure = configure
        }

        /// The knob called `name` (without the policy's prefix).
        public func knob(_ name: String) -> Knob? { knobs.first { $0.name == name } }

        /// The policy to give the kernel with `settings` (knob name without prefix → text): the
        /// configured one, the entry's own, or nil for Linux's. Values must have passed `problem(…)`.
        public func makePolicy(_ settings: [String: String]) -> (any HugepagePolicy)? {
            guard let configure else { return policy }
            var values: [String: Int] = [:]
            for knob in knobs { values[knob.name] = settings[knob.name].flatMap { Int($0) } ?? knob.defaultValue }
            return configure(values)
        }

        /// What is wrong with setting this policy's knob `name` to `value`, for `--set`; nil if fine.
        public func problem(knob name: String, value: String) -> String? {
            guard let knob = knob(name) else {
                if knobs.isEmpty {
                    return "policy \(self.name) has no knobs (Linux's tunables are sysfs files: --set defrag=…, --set khugepaged/…)"
                }
                return "policy \(self.name) has no knob '\(name)' (its knobs: \(knobs.map(\.name).joined(separator: ", ")))"
            }
            guard let v = Int(value), knob.range.contains(v) else {
                return "\(self.name)/\(name) must be an integer from \(knob.range.lowerBound) to \(knob.range.upperBound), not '\(value)'"
            }
            return nil
        }
    }

    /// An integer parameter of a policy.
    public struct Knob: Sendable, Hashable {
        /// The name after the policy's (`sync_n` of `quicksilver/sync_n`).
        public var name: String
        public var defaultValue: Int
        public var range: ClosedRange<Int>
        /// What it means, for docs and messages.
        public var summary: String

        public init(name: String, defaultValue: Int, range: ClosedRange<Int>, summary: String) {
            self.name = name; self.defaultValue = defaultValue; self.range = range; self.summary = summary
        }
    }

    /// Every policy, Linux's first.
    public static let all: [Entry] = [
        Entry(name: KernelDesign.linux2_6_38.name, design: .linux2_6_38, policy: nil,
              summary: "Linux 2.6.38 (2011): huge PMDs at fault and by khugepaged"),
        Entry(name: KernelDesign.linux6_18.name, design: .linux6_18, policy: nil,
              summary: "Linux 6.18: huge PMDs and multi-size THP at fault, khugepaged, deferred split"),
        Entry(name: IngensPolicy.name, design: .linux6_18, policy: IngensPolicy(),
              summary: "Ingens (OSDI 2016): 4 KiB at fault, khugepaged promotes ranges 90 % populated, queue first",
              knobs: [Knob(name: "util_threshold", defaultValue: 90, range: 0...100,
                           summary: "percent of a 2 MiB range populated before it is queued for promotion"),
                      Knob(name: "fairness", defaultValue: 0, range: 0...1,
                           summary: "serve the queue to the process with the highest fairness metric first"),
                      Knob(name: "scan_sleep_millisecs", defaultValue: 4000, range: 0...600_000,
                           summary: "the access-frequency sampler's period; 0 stops it"),
                      Knob(name: "weight", defaultValue: 1, range: 0...999,
                           summary: "every process's fairness weight; 0 leaves processes out of sampling and fairness")],
              configure: { IngensPolicy(utilThreshold: $0["util_threshold"]!, fairness: $0["fairness"] == 1,
                                          scanSleepMillisecs: UInt64($0["scan_sleep_millisecs"]!), weight: $0["weight"]!) }),
        Entry(name: HawkEyePolicy.name, design: .linux6_18, policy: HawkEyePolicy(),
              summary: "HawkEye (ASPLOS 2019): Linux's faults, promotion by access coverage, pre-zeroing, bloat recovery",
              knobs: [Knob(name: "sample_wait_millisecs", defaultValue: 1000, range: 1...600_000,
                           summary: "between clearing the accessed bits and counting them"),
                      Knob(name: "scan_sleep_millisecs", defaultValue: 5000, range: 1...600_000,
                           summary: "the sampler's sleep between passes"),
                      Knob(name: "prezero", defaultValue: 1, range: 0...1, summary: "run the pre-zeroing thread"),
                      Knob(name: "prezero_blocks", defaultValue: 10, range: 1...1_000_000,
                           summary: "free blocks zeroed per wake-up"),
                      Knob(name: "prezero_sleep_millisecs", defaultValue: 1000, range: 1...600_000,
                           summary: "the pre-zeroing thread's sleep between wake-ups"),
                      Knob(name: "bloat_recovery", defaultValue: 1, range: 0...1,
                           summary: "split huge pages with zero-filled subpages under memory pressure")],
              configure: { v in
                  HawkEyePolicy(sampleWaitMillisecs: UInt64(v["sample_wait_millisecs"]!),
                                scanSleepMillisecs: UInt64(v["scan_sleep_millisecs"]!),
                                preZeroing: .init(enabled: v["prezero"] == 1, blocksPerWakeup: v["prezero_blocks"]!,
                                                  sleepMillisecs: UInt64(v["prezero_sleep_millisecs"]!)),
                                bloatRecovery: v["bloat_recovery"] == 1)
              }),
        Entry(name: "freebsd", design: .linux6_18, policy: FreeBSDPolicy(),
              summary: "FreeBSD: 2 MiB reservations populated page by page, promoted in place when full",
              knobs: [Knob(name: "promote", defaultValue: 1, range: 0...1,
                           summary: "promote a fully populated reservation to a huge PMD (vm.pmap.pg_ps_enabled)")],
              configure: { FreeBSDPolicy(promotes: $0["promote"] == 1) }),
        Entry(name: "quicksilver", design: .linux6_18, policy: QuicksilverPolicy(),
              summary: "Quicksilver: FreeBSD reservations, filled and promoted at N pages by the fault (Sync-N) or a thread (Async-N)",
              knobs: [Knob(name: "sync_n", defaultValue: 64, range: 0...512,
                           summary: "Sync-N: the fault that brings a reservation to N pages fills and promotes it; 0 off"),
                      Knob(name: "async_n", defaultValue: 0, range: 0...512,
                           summary: "Async-N: the thread fills and promotes reservations of at least N pages; 0 off"),
                      Knob(name: "async_budget", defaultValue: 200_000, range: 1...1_000_000,
                           summary: "reservations the thread may fill per wake-up (pop_budget)"),
                      Knob(name: "async_interval_ms", defaultValue: 1000, range: 1...60_000,
                           summary: "the thread's period in milliseconds of simulated time (wakeup_frequency)"),
                      Knob(name: "defrag", defaultValue: 1, range: 0...1,
                           summary: "the thread evicts inactive reservations, migrating their pages out (enable_compact)"),
                      Knob(name: "inactive_ms", defaultValue: 5000, range: 1...3_600_000,
                           summary: "a reservation unchanged this long is inactive (inactive_thre)"),
                      Knob(name: "migrate_budget", defaultValue: 262_144, range: 1...16_777_216,
                           summary: "pages the thread may migrate per wake-up (migrate_budget)")],
              configure: { QuicksilverPolicy(syncN: $0["sync_n"]!, asyncN: $0["async_n"]!, asyncBudget: $0["async_budget"]!,
                                             asyncIntervalMilliseconds: $0["async_interval_ms"]!, defrag: $0["defrag"] == 1,
                                             inactiveMilliseconds: $0["inactive_ms"]!, migrateBudget: $0["migrate_budget"]!) }),
    ]

    /// The policy called `name`, if there is one.
    public static func named(_ name: String) -> Entry? { all.first { $0.name == name } }

    /// The names, comma-separated, for messages.
    public static var names: String { all.map(\.name).joined(separator: ", ") }

    /// `name` split into a policy and one of its knobs when it is `POLICY/KNOB` for a policy of the
    /// catalog (`freebsd/…`); nil for any other name (a sysfs file such as `khugepaged/max_ptes_none`).
    public static func policyKnob(_ name: String) -> (policy: Entry, knob: String)? {
        guard let slash = name.firstIndex(of: "/"), let entry = named(String(name[..<slash])) else { return nil }
        return (entry, String(name[name.index(after: slash)...]))
    }

    /// What is wrong with the policy name `name` for `option`; nil if the catalog has it.
    public static func problem(policy name: String, option: String = "--policy") -> String? {
        named(name) == nil ? "\(option): '\(name)' is not one of \(names)" : nil
    }
}
