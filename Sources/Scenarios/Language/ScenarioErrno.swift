import VMCore

/// An errno value as scenarios name it (`EINVAL`), with Linux's number.
///
/// Wider than `VMCore.Errno`: the native backend can see any errno the kernel returns.
public struct ScenarioErrno: Error, Sendable, Hashable, CustomStringConvertible {
    public var code: Int32

    public init(code: Int32) { self.code = code }

    /// The errno the model returned.
    public init(_ errno: Errno) { self.code = errno.rawValue }

    /// Looks an errno up by its symbolic name.
    public init?(name: String) {
        guard let entry = Self.table.first(where: { $0.1 == name }) else { return nil }
        self.code = entry.0
    }

    /// `EINVAL`, or `errno 123` for numbers without a name here.
    public var name: String { Self.table.first { $0.0 == code }?.1 ?? "errno \(code)" }
    public var description: String { name }

    /// Linux's numbers (`include/uapi/asm-generic/errno-base.h`, `errno.h`) for the errors memory calls return.
    static let table: [(Int32, String)] = [
        (1, "EPERM"), (2, "ENOENT"), (4, "EINTR"), (5, "EIO"), (9, "EBADF"), (11, "EAGAIN"),
        (12, "ENOMEM"), (13, "EACCES"), (14, "EFAULT"), (16, "EBUSY"), (17, "EEXIST"),
        (19, "ENODEV"), (22, "EINVAL"), (23, "ENFILE"), (24, "EMFILE"), (28, "ENOSPC"),
        (38, "ENOSYS"), (75, "EOVERFLOW"), (95, "EOPNOTSUPP"), (133, "EHWPOISON"),
    ]
}
