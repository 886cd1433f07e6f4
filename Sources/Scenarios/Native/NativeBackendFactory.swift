/// Makes the backend that runs scenarios on this machine's kernel, or says why it cannot.
public func makeNativeScenarioBackend() throws(ScenarioError) -> any ScenarioBackend {
    #if canImport(Glibc)
    NativeScenarioBackend()
    #else
    throw .unsupported("native runs need Linux")
    #endif
}
