// The library users import: `import Colony` brings the whole local core with it.
@_exported import Threading

/// This release of Colony.
public let colonyVersion = "0.1.0"
