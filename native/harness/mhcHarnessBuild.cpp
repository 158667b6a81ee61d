// mode run, build phase (steps 2-5): what TensorRT's builder asks of a plugin,
// up to the fields it serializes into the engine.
#include "mhcHarnessRun.h"

namespace mhcHarness
{
namespace
{
// 2. identity, number of outputs and output types; an int8 residual is refused.
void checkOutputTypes(RunCase const& rc, IPluginV3OneCore* core, IPluginV3OneBuild* build)
{
    OpSpec const* op = rc.op;
    int32_t const nbIn = rc.nbIn;
    int32_t const nbOut = rc.nbOut;
    check(std::strcmp(core->getPluginName(), op->pluginName) == 0 && std::strcmp(core->getPluginVersion(), "1") == 0
            && std::strcmp(core->getPluginNamespace(), "mhc") == 0,
        rc.tag + ": core identity");
    check(build->getNbOutputs() == nbOut, rc.tag + ": getNbOutputs == " + std::to_string(nbOut));

    std::vector<DataType> inTypes, outTypes(nbOut, DataType::kINT8);
    for (auto const& s : op->inputs)
    {
        inTypes.push_back(typeOf(s, rc.a.dtype));
    }
    int32_t const status = build->getOutputDataTypes(outTypes.data(), nbOut, inTypes.data(), nbIn);
    bool typesOk = status == 0;
    for (int32_t i = 0; i < nbOut; ++i)
    {
        typesOk = typesOk && outTypes[i] == typeOf(op->outputs[i], rc.a.dtype);
    }
    check(typesOk, rc.tag + ": getOutputDataTypes");
    if (op->inputs[0].residualType)
    {
        std::vector<DataType> badTypes = inTypes;
        badTypes[0] = DataType::kINT8;
        gLogger.takeMessages();
        check(build->getOutputDataTypes(outTypes.data(), nbOut, badTypes.data(), nbIn) != 0,
            rc.tag + ": getOutputDataTypes refuses an int8 residual");
        gLogger.takeMessages();
    }
}

// The input shape expressions at T=t (T symbolic, the rest constant).
std::vector<DimsExprs> inputExprs(RunCase const& rc, HarnessExprBuilder& eb, int64_t t)
{
    std::vector<DimsExprs> in(rc.nbIn);
    for (int32_t i = 0; i < rc.nbIn; ++i)
    {
        char const* s = rc.op->inputs[i].shape;
        in[i].nbDims = static_cast<int32_t>(std::strlen(s));
        for (int32_t k = 0; k < in[i].nbDims; ++k)
        {
            in[i].d[k] = eb.make(dimValue(s[k], t, rc.a.n, rc.a.d), s[k] != 'T');
        }
    }
    return in;
}

// Every tied input dim changed alone by one is refused at build time, before a
// kernel reads out of bounds: post_mix's n against the residual's, hc_fn's K, ...
void checkTiedDims(RunCase const& rc, IPluginV3OneBuild* build)
{
    RunArgs const& a = rc.a;
    std::string accepted;
    int cases = 0;
    for (int32_t i = 0; i < rc.nbIn; ++i)
    {
        char const* s = rc.op->inputs[i].shape;
        for (int32_t k = 0; s[k]; ++k)
        {
            if (!tied(*rc.op, s[k], false))
            {
                continue;
            }
            HarnessExprBuilder eb;
            std::vector<DimsExprs> in = inputExprs(rc, eb, 5), out(rc.nbOut);
            in[i].d[k] = eb.make(dimValue(s[k], 5, a.n, a.d) + 1, true);
            gLogger.takeMessages();
            if (build->getOutputShapes(in.data(), rc.nbIn, nullptr, 0, out.data(), rc.nbOut, eb) == 0)
            {
                accepted += " " + std::string(rc.op->inputs[i].name) + "[" + std::to_string(k) + "]";
            }
            ++cases;
        }
    }
    gLogger.takeMessages();
    check(cases > 0 && accepted.empty(),
        rc.tag + ": getOutputShapes refuses each of " + std::to_string(cases)
            + " input dims changed alone (every dim code one value across the inputs)"
            + (accepted.empty() ? "" : "; accepted:" + accepted));
}

// 3. output shapes through the expression builder, for each concrete T.
void checkOutputShapes(RunCase const& rc, IPluginV3OneBuild* build)
{
    RunArgs const& a = rc.a;
    for (int64_t t : a.ts)
    {
        HarnessExprBuilder eb;
        std::vector<DimsExprs> in = inputExprs(rc, eb, t), out(rc.nbOut);
        int32_t const status = build->getOutputShapes(in.data(), rc.nbIn, nullptr, 0, out.data(), rc.nbOut, eb);
        bool ok = status == 0 && eb.sizeTensorRequests == 0;
        for (int32_t i = 0; ok && i < rc.nbOut; ++i)
        {
            char const* s = rc.op->outputs[i].shape;
            ok = out[i].nbDims == static_cast<int32_t>(std::strlen(s));
            for (int32_t k = 0; ok && k < out[i].nbDims; ++k)
            {
                auto const* e = static_cast<HarnessDimExpr const*>(out[i].d[k]);
                ok = e != nullptr && e->value() == dimValue(s[k], t, a.n, a.d) && e->isConstant() == (s[k] != 'T');
            }
        }
        check(ok, rc.tag + ": getOutputShapes at T=" + std::to_string(t) + " (T symbolic, n and d constant)");
    }
    checkTiedDims(rc, build);
}

// The profile T in [1, maxT] (kOPT optT) as TensorRT describes it at network time.
std::vector<DynamicPluginTensorDesc> profileDescs(RunCase const& rc)
{
    std::vector<DynamicPluginTensorDesc> io(rc.nbIO);
    for (int32_t i = 0; i < rc.nbIO; ++i)
    {
        TensorSpec const& s = i < rc.nbIn ? rc.op->inputs[i] : rc.op->outputs[i - rc.nbIn];
        // Network time: TensorRT may leave any dim a wildcard in desc.dims (the
        // full model's residual comes from an Expand); min/max are concrete.
        io[i].desc.dims.nbDims = static_cast<int32_t>(std::strlen(s.shape));
        std::fill_n(io[i].desc.dims.d, io[i].desc.dims.nbDims, int64_t{-1});
        io[i].desc.format = TensorFormat::kLINEAR;
        io[i].desc.scale = -1.F;
        io[i].min = dimsOf(s, 1, rc.a.n, rc.a.d);
        io[i].opt = dimsOf(s, rc.optT, rc.a.n, rc.a.d);
        io[i].max = dimsOf(s, rc.maxT, rc.a.n, rc.a.d);
    }
    return io;
}

// 4. format negotiation: TensorRT asks position by position with the
// earlier positions already fixed; only linear, and only the right types.
// Leaves io at the wanted types, linear.
void checkFormats(RunCase const& rc, IPluginV3OneBuild* build, std::vector<DynamicPluginTensorDesc>& io)
{
    std::vector<DataType> wantTypes;
    for (int32_t i = 0; i < rc.nbIO; ++i)
    {
        wantTypes.push_back(typeOf(i < rc.nbIn ? rc.op->inputs[i] : rc.op->outputs[i - rc.nbIn], rc.a.dtype));
    }
    int32_t const firstResidual = rc.op->inputs[0].residualType ? 0 : -1;
    bool formatsOk = true;
    for (int32_t pos = 0; pos < rc.nbIO; ++pos)
    {
        for (DataType cand : {DataType::kFLOAT, DataType::kHALF, DataType::kBF16, DataType::kINT8, DataType::kINT32})
        {
            for (TensorFormat fmt : {TensorFormat::kLINEAR, TensorFormat::kHWC8, TensorFormat::kCHW32})
            {
                io[pos].desc.type = cand;
                io[pos].desc.format = fmt;
                bool const want = fmt == TensorFormat::kLINEAR
                    && (cand == wantTypes[pos]
                        || (pos == firstResidual
                            && (cand == DataType::kFLOAT || cand == DataType::kHALF || cand == DataType::kBF16)));
                bool const got = build->supportsFormatCombination(pos, io.data(), rc.nbIn, rc.nbOut);
                if (got != want)
                {
                    formatsOk = false;
                    std::printf("  supportsFormatCombination(pos=%d, %s, format %d) = %d, expected %d\n", pos,
                        typeName(cand), static_cast<int>(fmt), got, want);
                }
            }
        }
        io[pos].desc.type = wantTypes[pos];
        io[pos].desc.format = TensorFormat::kLINEAR;
    }
    check(formatsOk,
        rc.tag + ": supportsFormatCombination accepts exactly linear " + typeName(rc.a.dtype) + "/float32");
}

// 5a. configurePlugin with the profile; one in which n or d varies is refused.
void checkConfigure(RunCase const& rc, IPluginV3OneBuild* build, std::vector<DynamicPluginTensorDesc>& io)
{
    int32_t const nbIn = rc.nbIn;
    int32_t const nbOut = rc.nbOut;
    int32_t const status = build->configurePlugin(io.data(), nbIn, io.data() + nbIn, nbOut);
    check(status == 0, rc.tag + ": configurePlugin (T in [1, " + std::to_string(rc.maxT) + "], dims -1 in desc.dims)");
    // n and d are fixed per engine: a profile in which they vary is refused.
    std::vector<DynamicPluginTensorDesc> varying(io);
    for (int32_t i = 0; i < nbIn; ++i)
    {
        Dims& mx = varying[i].max;
        mx.d[mx.nbDims - 1] += mx.nbDims >= 2 ? 8 : 0;
    }
    gLogger.takeMessages();
    check(build->configurePlugin(varying.data(), nbIn, varying.data() + nbIn, nbOut) != 0,
        rc.tag + ": configurePlugin refuses a profile in which n or d varies");
    gLogger.takeMessages();
}

// 5b. the clone TensorRT times tactics with, configured like the original.
int cloneForTiming(RunCase const& rc, IPluginV3* built, BuildResult* out)
{
    out->clone = built->clone();
    check(out->clone != nullptr && out->clone != built, rc.tag + ": clone");
    if (!out->clone)
    {
        return 1;
    }
    auto* cloneBuild = capability<IPluginV3OneBuild>(out->clone, PluginCapabilityType::kBUILD, "PLUGIN_V3ONE_BUILD");
    out->cloneRt
        = capability<IPluginV3OneRuntime>(out->clone, PluginCapabilityType::kRUNTIME, "PLUGIN_V3ONE_RUNTIME");
    if (!cloneBuild || !out->cloneRt)
    {
        return 1;
    }
    std::vector<DynamicPluginTensorDesc>& io = out->io;
    check(cloneBuild->configurePlugin(io.data(), rc.nbIn, io.data() + rc.nbIn, rc.nbOut) == 0,
        rc.tag + ": configurePlugin on the clone");
    return 0;
}

// 5c. getFieldsToSerialize carries every field, with the values given.
void checkSerialized(RunCase const& rc, FieldSet& serialized, PluginFieldCollection const* names,
    std::vector<std::pair<std::string, std::string>> const& plainAttrs)
{
    bool serOk = serialized.get()->nbFields == (names ? names->nbFields : 0);
    for (auto const& kv : plainAttrs)
    {
        PluginField const* f = serialized.find(kv.first);
        if (!f)
        {
            serOk = false;
            continue;
        }
        double const got = f->type == PluginFieldType::kFLOAT32 ? *static_cast<float const*>(f->data)
                                                                : *static_cast<int32_t const*>(f->data);
        double const want = f->type == PluginFieldType::kFLOAT32 ? static_cast<double>(std::stof(kv.second))
                                                                 : static_cast<double>(std::stol(kv.second));
        serOk = serOk && got == want;
    }
    check(serOk, rc.tag + ": getFieldsToSerialize carries every field with the given values");
}
} // namespace

int runBuildPhase(RunCase const& rc, IPluginCreatorV3One* creator, FieldSet& attrs,
    PluginFieldCollection const* names, std::vector<std::pair<std::string, std::string>> const& plainAttrs,
    BuildResult* out, FieldSet* serialized)
{
    // 2. build phase.
    IPluginV3* built = creator->createPlugin("harness_layer", attrs.get(), TensorRTPhase::kBUILD);
    check(built != nullptr, rc.tag + ": createPlugin (build phase)");
    if (!built)
    {
        return 1;
    }
    auto* core = capability<IPluginV3OneCore>(built, PluginCapabilityType::kCORE, "PLUGIN_V3ONE_CORE");
    auto* build = capability<IPluginV3OneBuild>(built, PluginCapabilityType::kBUILD, "PLUGIN_V3ONE_BUILD");
    if (!core || !build)
    {
        return 1;
    }
    checkOutputTypes(rc, core, build);
    checkOutputShapes(rc, build);
    out->io = profileDescs(rc);
    checkFormats(rc, build, out->io);

    // 5. configurePlugin, workspace, serialization.
    checkConfigure(rc, build, out->io);
    std::vector<DynamicPluginTensorDesc> const& io = out->io;
    out->wsBytes = build->getWorkspaceSize(io.data(), rc.nbIn, io.data() + rc.nbIn, rc.nbOut);
    std::printf("  workspace at max T=%lld: %zu bytes\n", static_cast<long long>(rc.maxT), out->wsBytes);
    if (int const status = cloneForTiming(rc, built, out))
    {
        return status;
    }
    auto* buildRt = capability<IPluginV3OneRuntime>(built, PluginCapabilityType::kRUNTIME, "PLUGIN_V3ONE_RUNTIME");
    if (!buildRt)
    {
        return 1;
    }
    serialized->copyFrom(buildRt->getFieldsToSerialize());
    checkSerialized(rc, *serialized, names, plainAttrs);
    // The engine keeps only the serialized fields: the build plugin goes away.
    delete built;
    return 0;
}
} // namespace mhcHarness
