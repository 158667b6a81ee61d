// The run mode's phases, in the order TensorRT calls a plugin: the arguments
// become creator fields (mhcHarnessRun.cpp), the build phase checks and
// serializes the plugin (mhcHarnessBuild.cpp), the runtime phase deserializes,
// attaches to contexts and enqueues it every way TensorRT may
// (mhcHarnessRuntime.cpp). A phase returns 0 to go on, else modeRun's status.
#pragma once

#include "mhcHarness.h"

namespace mhcHarness
{
// One run: the op, the dtype and sizes asked for, and what follows from them.
struct RunCase
{
    explicit RunCase(RunArgs const& args)
        : a(args)
    {
    }
    RunArgs const& a;
    OpSpec const* op{nullptr};
    std::string tag; // "MhcPre float32 n=4 d=64", the prefix of every check
    int32_t nbIn{0};
    int32_t nbOut{0};
    int32_t nbIO{0};
    int64_t maxT{0};
    int64_t optT{0}; // the profile's kOPT, apart from kMAX
};

// What the build phase leaves to the runtime phase besides the serialized fields.
struct BuildResult
{
    std::vector<DynamicPluginTensorDesc> io; // the profile, as configured
    size_t wsBytes{0};
    // TensorRT times tactics by enqueueing through clones of the build plugin:
    // one, configured like the original, is kept for the GPU checks.
    IPluginV3* clone{nullptr};
    IPluginV3OneRuntime* cloneRt{nullptr};
};

// Build phase: createPlugin(kBUILD) from attrs, types, shapes, formats,
// configurePlugin, workspace, the clone and getFieldsToSerialize (into
// serialized). The build plugin is deleted, as the engine keeps only its fields.
int runBuildPhase(RunCase const& rc, IPluginCreatorV3One* creator, FieldSet& attrs,
    PluginFieldCollection const* names, std::vector<std::pair<std::string, std::string>> const& plainAttrs,
    BuildResult* out, FieldSet* serialized);

// Runtime phase: createPlugin(kRUNTIME) from the serialized fields,
// attachToContext, onShapeChange, and (with a GPU) the enqueues per T.
int runRuntimePhase(RunCase const& rc, IPluginCreatorV3One* creator, FieldSet& serialized, BuildResult& built);

// Whether an input dim of `code` is tied to another dim, so that changing it alone
// breaks the plugins' rule: every code has one value across the inputs, and M, K
// and digits are what n and d make them. T counts only where it is known
// (`knownT`: at run time; at build time it is symbolic).
bool tied(OpSpec const& op, char code, bool knownT);

// The descriptors of the inputs and outputs at T=t, from the configured profile.
void descsAt(RunCase const& rc, std::vector<DynamicPluginTensorDesc> const& io, int64_t t,
    std::vector<PluginTensorDesc>& in, std::vector<PluginTensorDesc>& out);
} // namespace mhcHarness
