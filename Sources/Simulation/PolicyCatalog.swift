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

        public init(name: String, design: KernelDesign, policy: (any HugepagePolicy)?, summary: String) {
            self.name = name; self.design = design; self.policy = policy; self.summary = summary
        }
    }

    /// Every policy, Linux's first.
    public static let all: [Entry] = [
        Entry(name: KernelDesign.linux2_6_38.name, design: .linux2_6_38, policy: nil,
              summary: "Linux 2.6.38 (2011): huge PMDs at fault and by khugepaged"),
        Entry(name: KernelDesign.linux6_18.name, design: .linux6_18, policy: nil,
              summary: "Linux 6.18: huge PMDs and multi-size THP at fault, khugepaged, deferred split"),
        Entry(name: IngensPolicy.name, design: .linux6_18, policy: IngensPolicy(),
              summary: "Ingens (OSDI 2016): 4 KiB at fault, khugepaged promotes ranges 90 % populated, queue first"),
        Entry(name: HawkEyePolicy.name, design: .linux6_18, policy: HawkEyePolicy(),
              summary: "HawkEye (ASPLOS 2019): Linux's faults, promotion by access coverage, pre-zeroing, bloat recovery"),
    ]

    /// The policy called `name`, if there is one.
    public static func named(_ name: String) -> Entry? { all.first { $0.name == name } }

    /// The names, comma-separated, for messages.
    public static var names: String { all.map(\.name).joined(separator: ", ") }
}
