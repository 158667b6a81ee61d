// mhc_plugin_harness: drives libmhc_trt_plugins_trt<major>.so through the IPluginV3
// sequence TensorRT uses, without TensorRT. TensorRT's plugin interfaces are
// pure-virtual classes or inline wrappers over pure-virtual apiv:: classes, so
// the harness implements the TensorRT side (logger finder, expression builder,
// resource context) itself and links no libnvinfer (the link uses
// --no-undefined, so any reference into libnvinfer would fail the build).
//
//   mhc_plugin_harness LIB list
//       creators, their identity and their fields (checked against spec.py by pytest)
//   mhc_plugin_harness LIB fields
//       every creator: defaults, good values, and each bad value rejected with
//       a message naming the field, in both phases (no GPU needed)
//   mhc_plugin_harness LIB logger
//       hands the library this harness's logger finder, makes it log (a bad
//       field value) and says whether the message reached that logger; a library
//       built against another TensorRT major must refuse the finder and use stderr
//   mhc_plugin_harness LIB registry --load dlopen|loadLibrary[,dlopen|loadLibrary...]
//       plays libnvinfer's plugin registry (getPluginRegistry is exported like
//       libnvinfer's): loads the library those ways in that order and lists
//       every creator registered, with its fields
//   mhc_plugin_harness LIB run --op pre|sinkhorn|post|head --dtype float32|float16|bfloat16
//       --n N --d D --T t1,t2,... --dir DIR [--attr name=value]... [--string-fields] [--no-gpu]
//       the full lifecycle; per T reads DIR/T<t>.<input>.bin (raw, row-major) and
//       writes DIR/T<t>.<output>.out.bin. --no-gpu stops before onShapeChange/enqueue
//       buffers are touched on the device (host part of the lifecycle only).
//
// Files: mhcHarness.h (what they share); this file (the TensorRT side, the
// library, the list/fields/logger/registry modes, the command line); the run
// mode by phase: mhcHarnessRun.cpp (arguments to fields, the phases in order),
// mhcHarnessBuild.cpp (build phase: types, shapes, formats, configure,
// serialize), mhcHarnessRuntime.cpp (deserialize, attach, enqueue every way,
// compare and write the outputs).
#include "mhcHarness.h"

using namespace mhcHarness;

// The harness stands in for libnvinfer, which exports this; the plugin library
// compares it with the TensorRT major of its own headers. MHC_HARNESS_TRT_MAJOR
// makes it claim another (1: TensorRT-RTX 1.x, which reports its own major).
extern "C" __attribute__((visibility("default"))) int32_t getInferLibMajorVersion() noexcept
{
    char const* env = std::getenv("MHC_HARNESS_TRT_MAJOR");
    return env && *env ? static_cast<int32_t>(std::strtol(env, nullptr, 10)) : NV_TENSORRT_MAJOR;
}

namespace mhcHarness
{
int gFailures = 0;

void check(bool ok, std::string const& what)
{
    std::printf("%s %s\n", ok ? "PASS" : "FAIL", what.c_str());
    std::fflush(stdout);
    if (!ok)
    {
        ++gFailures;
    }
}

HarnessLogger gLogger;
} // namespace mhcHarness

namespace
{
class HarnessLoggerFinder : public ILoggerFinder
{
public:
    explicit HarnessLoggerFinder(ILogger* logger)
        : mLogger(logger)
    {
    }
    ILogger* findLogger() override
    {
        return mLogger;
    }

private:
    ILogger* mLogger;
};

HarnessLoggerFinder gLoggerFinder(&gLogger);

// ---- the TensorRT side: plugin registry ----------------------------------------
// What libnvinfer's registry does for a plugin library: loadLibrary dlopens it,
// hands it the logger finder and registers what getCreators returns (failing
// when any of them is registered already); registerCreator refuses a second
// creator of the same name, version and namespace.
class HarnessRegistry : public IPluginRegistry
{
public:
    PluginLibraryHandle loadLibrary(AsciiChar const* pluginPath) noexcept override
    {
        void* h = dlopen(pluginPath, RTLD_NOW | RTLD_LOCAL);
        if (!h)
        {
            std::printf("  [registry] dlopen %s: %s\n", pluginPath, dlerror());
            return nullptr;
        }
        using SetFinder = void (*)(ILoggerFinder*);
        using GetCreators = IPluginCreatorInterface* const* (*) (int32_t&);
        auto setFinder = reinterpret_cast<SetFinder>(dlsym(h, "setLoggerFinder"));
        auto getCreators = reinterpret_cast<GetCreators>(dlsym(h, "getCreators"));
        if (!getCreators)
        {
            return nullptr;
        }
        if (setFinder)
        {
            setFinder(&gLoggerFinder);
        }
        int32_t nb = 0;
        IPluginCreatorInterface* const* list = getCreators(nb);
        bool ok = list != nullptr;
        for (int32_t i = 0; ok && i < nb; ++i)
        {
            ok = registerCreator(*list[i], "");
        }
        return ok ? h : nullptr;
    }
    void deregisterLibrary(PluginLibraryHandle) noexcept override {}
    bool registerCreator(IPluginCreatorInterface& creator, AsciiChar const* const) noexcept override
    {
        ++registerCalls;
        std::string const key = keyOf(creator);
        for (auto* c : mCreators)
        {
            if (keyOf(*c) == key)
            {
                std::printf("  [registry] %s is registered already\n", key.c_str());
                return false;
            }
        }
        mCreators.push_back(&creator);
        return true;
    }
    bool deregisterCreator(IPluginCreatorInterface const& creator) noexcept override
    {
        ++deregisterCalls;
        auto it = std::find(mCreators.begin(), mCreators.end(), &creator);
        if (it == mCreators.end())
        {
            return false;
        }
        mCreators.erase(it);
        return true;
    }
    IPluginCreatorInterface* const* getAllCreators(int32_t* const n) const noexcept override
    {
        *n = static_cast<int32_t>(mCreators.size());
        return mCreators.data();
    }
    IPluginCreatorInterface* const* getAllCreatorsRecursive(int32_t* const n) noexcept override
    {
        return getAllCreators(n);
    }
    IPluginCreatorInterface* getCreator(AsciiChar const* const name, AsciiChar const* const version,
        AsciiChar const* const ns) noexcept override
    {
        std::string const key = std::string(name) + "/" + version + "/" + (ns ? ns : "");
        for (auto* c : mCreators)
        {
            if (keyOf(*c) == key)
            {
                return c;
            }
        }
        return nullptr;
    }
    void setErrorRecorder(IErrorRecorder* const) noexcept override {}
    IErrorRecorder* getErrorRecorder() const noexcept override
    {
        return nullptr;
    }
    bool isParentSearchEnabled() const override
    {
        return false;
    }
    void setParentSearchEnabled(bool const) override {}
    IPluginResource* acquirePluginResource(AsciiChar const*, IPluginResource*) noexcept override
    {
        return nullptr;
    }
    int32_t releasePluginResource(AsciiChar const*) noexcept override
    {
        return -1;
    }
#if NV_TENSORRT_MAJOR < 11
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    // TensorRT 10's deprecated IPluginV2 members (gone in 11): never used by the library.
    bool registerCreator(IPluginCreator&, AsciiChar const* const) noexcept override
    {
        return false;
    }
    IPluginCreator* const* getPluginCreatorList(int32_t* const n) const noexcept override
    {
        *n = 0;
        return nullptr;
    }
    IPluginCreator* getPluginCreator(AsciiChar const* const, AsciiChar const* const, AsciiChar const* const) noexcept override
    {
        return nullptr;
    }
    bool deregisterCreator(IPluginCreator const&) noexcept override
    {
        return false;
    }
#pragma GCC diagnostic pop
#endif
    // name/version/namespace of a V3 creator ("?" for another interface).
    static std::string keyOf(IPluginCreatorInterface const& c)
    {
        if (std::strcmp(c.getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") != 0)
        {
            return "?";
        }
        auto const& v3 = static_cast<IPluginCreatorV3One const&>(c);
        return std::string(v3.getPluginName()) + "/" + v3.getPluginVersion() + "/" + v3.getPluginNamespace();
    }
    int32_t registerCalls{0};
    int32_t deregisterCalls{0};

private:
    std::vector<IPluginCreatorInterface*> mCreators;
};

HarnessRegistry gRegistry;
} // namespace

// libnvinfer exports these; a plugin library loaded by dlopen alone finds them with dlsym.
extern "C" __attribute__((visibility("default"))) IPluginRegistry* getPluginRegistry() noexcept
{
    return &gRegistry;
}

extern "C" __attribute__((visibility("default"))) ILogger* getLogger() noexcept
{
    return &gLogger;
}

namespace
{
std::vector<FieldExpect> const kMIX_FIELDS = {{"rms_eps", PluginFieldType::kFLOAT32, FieldExpect::kEPS},
    {"pre_eps", PluginFieldType::kFLOAT32, FieldExpect::kEPS},
    {"sinkhorn_eps", PluginFieldType::kFLOAT32, FieldExpect::kEPS},
    {"post_mult", PluginFieldType::kFLOAT32, FieldExpect::kPOSITIVE},
    {"sinkhorn_iters", PluginFieldType::kINT32, FieldExpect::kITERS}};

} // namespace

namespace mhcHarness
{
std::vector<OpSpec> const kOPS = {
    {"pre", "MhcPre", {{"residual", "Tnd", true}, {"hc_fn", "MK", false}, {"hc_scale", "3", false}, {"hc_base", "M", false}},
        {{"layer_input", "Td", true}, {"post_mix", "Tn", false}, {"comb_mix", "Tnn", false}},
        {{"rms_eps", PluginFieldType::kFLOAT32, FieldExpect::kEPS},
            {"pre_eps", PluginFieldType::kFLOAT32, FieldExpect::kEPS},
            {"sinkhorn_eps", PluginFieldType::kFLOAT32, FieldExpect::kEPS},
            {"post_mult", PluginFieldType::kFLOAT32, FieldExpect::kPOSITIVE},
            {"sinkhorn_iters", PluginFieldType::kINT32, FieldExpect::kITERS}}},
    {"sinkhorn", "MhcSinkhorn", {{"logits", "Tnn", false}}, {{"comb", "Tnn", false}},
        {{"iters", PluginFieldType::kINT32, FieldExpect::kITERS}, {"eps", PluginFieldType::kFLOAT32, FieldExpect::kEPS}}},
    {"post", "MhcPost",
        {{"x", "Td", true}, {"residual", "Tnd", true}, {"post_mix", "Tn", false}, {"comb_mix", "Tnn", false}},
        {{"out", "Tnd", true}}, {}},
    {"head", "MhcHead", {{"residual", "Tnd", true}, {"hc_fn", "nK", false}, {"hc_scale", "1", false}, {"hc_base", "n", false}},
        {{"y", "Td", true}},
        {{"rms_eps", PluginFieldType::kFLOAT32, FieldExpect::kEPS}, {"eps", PluginFieldType::kFLOAT32, FieldExpect::kEPS}}},
    {"post_pre", "MhcPostPre",
        {{"x", "Td", true}, {"residual", "Tnd", true}, {"post_mix", "Tn", false}, {"comb_mix", "Tnn", false},
            {"hc_fn", "MK", false}, {"hc_scale", "3", false}, {"hc_base", "M", false}},
        {{"residual_out", "Tnd", true}, {"layer_input", "Td", true}, {"next_post_mix", "Tn", false},
            {"next_comb_mix", "Tnn", false}},
        {{"rms_eps", PluginFieldType::kFLOAT32, FieldExpect::kEPS},
            {"pre_eps", PluginFieldType::kFLOAT32, FieldExpect::kEPS},
            {"sinkhorn_eps", PluginFieldType::kFLOAT32, FieldExpect::kEPS},
            {"post_mult", PluginFieldType::kFLOAT32, FieldExpect::kPOSITIVE},
            {"sinkhorn_iters", PluginFieldType::kINT32, FieldExpect::kITERS}}},
    {"post_head", "MhcPostHead",
        {{"x", "Td", true}, {"residual", "Tnd", true}, {"post_mix", "Tn", false}, {"comb_mix", "Tnn", false},
            {"hc_fn", "nK", false}, {"hc_scale", "1", false}, {"hc_base", "n", false}},
        {{"y", "Td", true}},
        {{"rms_eps", PluginFieldType::kFLOAT32, FieldExpect::kEPS}, {"eps", PluginFieldType::kFLOAT32, FieldExpect::kEPS}}},
    // DeepSeek-V4.1 (spec "DeepSeek-V4.1"): MhcPre's fields on the mixes ops, none on the collapses.
    {"mix", "MhcMix", {{"residual", "Tnd", true}, {"hc_fn", "MK", false}, {"hc_scale", "3", false}, {"hc_base", "M", false}},
        {{"pre_mix", "Tn", false}, {"post_mix", "Tn", false}, {"comb_mix", "Tnn", false}}, kMIX_FIELDS},
    {"collapse", "MhcCollapse", {{"residual", "Tnd", true}, {"pre_mix", "Tn", false}}, {{"layer_input", "Td", true}}, {}},
    {"post_mix", "MhcPostMix",
        {{"x", "Td", true}, {"residual", "Tnd", true}, {"pre_mix", "Tn", false}, {"post_mix", "Tn", false},
            {"comb_mix", "Tnn", false}, {"hc_fn", "MK", false}, {"hc_scale", "3", false}, {"hc_base", "M", false}},
        {{"residual_out", "Tnd", true}, {"layer_input", "Td", true}, {"next_pre_mix", "Tn", false},
            {"next_post_mix", "Tn", false}, {"next_comb_mix", "Tnn", false}},
        kMIX_FIELDS},
    {"post_collapse", "MhcPostCollapse",
        {{"x", "Td", true}, {"residual", "Tnd", true}, {"pre_mix", "Tn", false}, {"post_mix", "Tn", false},
            {"comb_mix", "Tnn", false}},
        {{"y", "Td", true}}, {}},
};

int64_t dimValue(char code, int64_t t, int64_t n, int64_t d)
{
    switch (code)
    {
    case 'T': return t;
    case 'n': return n;
    case 'd': return d;
    case 'M': return (2 + n) * n;
    case 'K': return n * d;
    default: return code - '0';
    }
}

Dims dimsOf(TensorSpec const& s, int64_t t, int64_t n, int64_t d)
{
    Dims dims{};
    dims.nbDims = static_cast<int32_t>(std::strlen(s.shape));
    for (int32_t i = 0; i < dims.nbDims; ++i)
    {
        dims.d[i] = dimValue(s.shape[i], t, n, d);
    }
    return dims;
}

int64_t volume(Dims const& d)
{
    int64_t v = 1;
    for (int32_t i = 0; i < d.nbDims; ++i)
    {
        v *= d.d[i];
    }
    return v;
}

size_t elemSize(DataType t)
{
    return t == DataType::kFLOAT ? 4 : 2;
}

char const* typeName(DataType t)
{
    switch (t)
    {
    case DataType::kFLOAT: return "float32";
    case DataType::kHALF: return "float16";
    case DataType::kBF16: return "bfloat16";
    case DataType::kINT8: return "int8";
    case DataType::kINT32: return "int32";
    default: return "other";
    }
}

IPluginCreatorV3One* findCreator(Library const& lib, char const* name)
{
    for (auto* c : lib.creators)
    {
        if (std::strcmp(c->getPluginName(), name) == 0 && std::strcmp(c->getPluginVersion(), "1") == 0
            && std::strcmp(c->getPluginNamespace(), "mhc") == 0)
        {
            return c;
        }
    }
    return nullptr;
}
} // namespace mhcHarness

namespace
{
bool parseDtype(std::string const& s, DataType* out)
{
    if (s == "float32" || s == "fp32")
    {
        *out = DataType::kFLOAT;
    }
    else if (s == "float16" || s == "fp16")
    {
        *out = DataType::kHALF;
    }
    else if (s == "bfloat16" || s == "bf16")
    {
        *out = DataType::kBF16;
    }
    else
    {
        return false;
    }
    return true;
}

// ---- the plugin library --------------------------------------------------------
using GetCreatorsFn = IPluginCreatorInterface* const* (*) (int32_t&);
using SetLoggerFinderFn = void (*)(ILoggerFinder*);

bool loadLibrary(char const* path, Library* lib)
{
    // RTLD_LOCAL as TensorRT's loader does: the library must not rely on
    // symbols leaking from other libraries.
    lib->handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib->handle)
    {
        std::printf("FAIL dlopen %s: %s\n", path, dlerror());
        return false;
    }
    auto setLoggerFinder = reinterpret_cast<SetLoggerFinderFn>(dlsym(lib->handle, "setLoggerFinder"));
    auto getCreators = reinterpret_cast<GetCreatorsFn>(dlsym(lib->handle, "getCreators"));
    check(setLoggerFinder != nullptr, "library exports setLoggerFinder");
    check(getCreators != nullptr, "library exports getCreators");
    if (!setLoggerFinder || !getCreators)
    {
        return false;
    }
    setLoggerFinder(&gLoggerFinder);
    int32_t nb = -1;
    IPluginCreatorInterface* const* list = getCreators(nb);
    check(list != nullptr && nb > 0, "getCreators returns " + std::to_string(nb) + " creators");
    for (int32_t i = 0; list && i < nb; ++i)
    {
        InterfaceInfo const info = list[i]->getInterfaceInfo();
        bool const isV3One = std::strcmp(info.kind, "PLUGIN CREATOR_V3ONE") == 0;
        check(isV3One && info.major == 1, std::string("creator ") + std::to_string(i) + " interface is " + info.kind);
        if (isV3One)
        {
            lib->creators.push_back(static_cast<IPluginCreatorV3One*>(list[i]));
        }
    }
    return gFailures == 0;
}

// ---- mode: logger ------------------------------------------------------------------
// Only the library's own entry points and a creator's getPluginName/createPlugin
// are called, so the check also runs on a library of the other TensorRT major.
int modeLogger(Library const& lib)
{
    IPluginCreatorV3One* c = findCreator(lib, "MhcSinkhorn");
    check(c != nullptr, "creator MhcSinkhorn found");
    if (!c)
    {
        return 1;
    }
    int32_t const badIters = 0;
    PluginField field("iters", &badIters, PluginFieldType::kINT32, 1);
    PluginFieldCollection fc{1, &field};
    gLogger.takeMessages();
    IPluginV3* p = c->createPlugin("harness", &fc, TensorRTPhase::kBUILD);
    std::string const logged = gLogger.takeMessages();
    std::printf("LOGGER %s\n", logged.find("iters") != std::string::npos ? "received" : "silent");
    check(p == nullptr, "iters=0 rejected");
    delete p;
    return 0;
}

// ---- mode: registry -------------------------------------------------------------------
// Loads the library the ways TensorRT and its users do, in the order given:
// "dlopen" (polygraphy --plugins, ctypes.CDLL: nothing but dlopen) and
// "loadLibrary" (IPluginRegistry::loadLibrary, trtexec --dynamicPlugins).
// Then lists what this harness's registry holds; pytest checks it.
int modeRegistry(char const* path, std::string const& steps)
{
    std::stringstream ss(steps);
    std::string step;
    std::vector<void*> handles;
    while (std::getline(ss, step, ','))
    {
        if (step == "dlopen")
        {
            void* h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
            check(h != nullptr, std::string("dlopen ") + path + (h ? "" : std::string(": ") + dlerror()));
            handles.push_back(h);
        }
        else if (step == "loadLibrary")
        {
            check(gRegistry.loadLibrary(path) != nullptr, "IPluginRegistry::loadLibrary returns a handle");
        }
        else
        {
            std::printf("usage: registry --load dlopen|loadLibrary[,...]\n");
            return 2;
        }
    }
    int32_t nb = 0;
    IPluginCreatorInterface* const* all = gRegistry.getAllCreators(&nb);
    for (int32_t i = 0; i < nb; ++i)
    {
        std::string fields;
        if (HarnessRegistry::keyOf(*all[i]) != "?")
        {
            PluginFieldCollection const* fc = static_cast<IPluginCreatorV3One*>(all[i])->getFieldNames();
            for (int32_t k = 0; fc && k < fc->nbFields; ++k)
            {
                fields += (k ? "," : "") + std::string(fc->fields[k].name);
            }
        }
        std::printf("REGISTERED %s fields=%s\n", HarnessRegistry::keyOf(*all[i]).c_str(), fields.c_str());
    }
    std::printf("REGISTRY %d creators, %d registerCreator calls, %d deregisterCreator calls\n", nb,
        gRegistry.registerCalls, gRegistry.deregisterCalls);
    // A bad field through the registered creator: its message must reach this
    // harness's logger (given by loadLibrary, or found by getLogger after a dlopen).
    if (auto* c = static_cast<IPluginCreatorV3One*>(gRegistry.getCreator("MhcSinkhorn", "1", "mhc")))
    {
        int32_t const badIters = 0;
        PluginField field("iters", &badIters, PluginFieldType::kINT32, 1);
        PluginFieldCollection fc{1, &field};
        gLogger.takeMessages();
        IPluginV3* p = c->createPlugin("harness", &fc, TensorRTPhase::kBUILD);
        std::printf("LOGGER %s\n", gLogger.takeMessages().find("iters") != std::string::npos ? "received" : "silent");
        delete p;
    }
    return gFailures ? 1 : 0;
}

// ---- mode: list --------------------------------------------------------------------
int modeList(Library const& lib)
{
    for (auto* c : lib.creators)
    {
        std::printf("creator %s %s %s\n", c->getPluginName(), c->getPluginVersion(), c->getPluginNamespace());
        PluginFieldCollection const* fc = c->getFieldNames();
        for (int32_t i = 0; fc && i < fc->nbFields; ++i)
        {
            PluginFieldType const t = fc->fields[i].type;
            std::printf("field %s %s %s\n", c->getPluginName(), fc->fields[i].name,
                t == PluginFieldType::kFLOAT32 ? "float" : t == PluginFieldType::kINT32 ? "int" : "other");
        }
    }
    return 0;
}

// ---- mode: fields ----------------------------------------------------------------------
bool expectRejected(IPluginCreatorV3One* c, FieldSet& fs, TensorRTPhase phase, std::string const& mustName,
    std::string const& what)
{
    gLogger.takeMessages();
    IPluginV3* p = c->createPlugin("harness", fs.get(), phase);
    std::string const logged = gLogger.takeMessages();
    bool const ok = p == nullptr && logged.find(mustName) != std::string::npos;
    check(ok, std::string(c->getPluginName()) + ": " + what + " rejected naming '" + mustName + "'"
            + (phase == TensorRTPhase::kRUNTIME ? " (runtime phase)" : ""));
    delete p;
    return ok;
}

// Field list: exactly the spec's attributes with their types.
void checkFieldNames(IPluginCreatorV3One* c, OpSpec const& op)
{
    PluginFieldCollection const* names = c->getFieldNames();
    bool same = names && names->nbFields == static_cast<int32_t>(op.fields.size());
    for (size_t i = 0; same && i < op.fields.size(); ++i)
    {
        same = std::strcmp(names->fields[i].name, op.fields[i].name) == 0 && names->fields[i].type == op.fields[i].type;
    }
    check(same, std::string(op.pluginName) + ": getFieldNames lists exactly the spec's attributes");
}

// Every bad value of field f (out of its rule, wrong type or length) is refused naming f.
void checkBadValues(IPluginCreatorV3One* c, FieldExpect const& f, TensorRTPhase phase)
{
    float const nan = std::numeric_limits<float>::quiet_NaN();
    float const inf = std::numeric_limits<float>::infinity();
    std::vector<std::pair<std::string, FieldSet*>> bad;
    std::vector<std::unique_ptr<FieldSet>> keep;
    auto mk = [&](std::string const& what) {
        keep.push_back(std::make_unique<FieldSet>());
        bad.emplace_back(what, keep.back().get());
        return keep.back().get();
    };
    if (f.type == PluginFieldType::kFLOAT32)
    {
        mk("NaN")->addFloat(f.name, nan);
        mk("+inf")->addFloat(f.name, inf);
        mk("-inf")->addFloat(f.name, -inf);
        mk("-1")->addFloat(f.name, -1.F);
        if (f.rule == FieldExpect::kPOSITIVE)
        {
            mk("0")->addFloat(f.name, 0.F);
        }
        mk("kINT32 type")->addInt(f.name, 1);
        float two[2] = {1.F, 2.F};
        mk("length 2")->add(f.name, PluginFieldType::kFLOAT32, two, 2, sizeof(two));
        double dbl = 1e-6;
        mk("kFLOAT64 type")->add(f.name, PluginFieldType::kFLOAT64, &dbl, 1, sizeof(dbl));
    }
    else
    {
        mk("0")->addInt(f.name, 0);
        mk("-5")->addInt(f.name, -5);
        mk("kFLOAT32 type")->addFloat(f.name, 20.F);
        int64_t i64 = 20;
        mk("kINT64 type")->add(f.name, PluginFieldType::kINT64, &i64, 1, sizeof(i64));
    }
    for (auto& b : bad)
    {
        expectRejected(c, *b.second, phase, f.name, std::string(f.name) + " = " + b.first);
    }
}

// One phase: defaults, an unknown field, every bad value, the plugin_* strings.
void checkFieldsInPhase(IPluginCreatorV3One* c, OpSpec const& op, TensorRTPhase phase)
{
    // No fields: the defaults (the ONNX parser omits attributes the node lacks).
    FieldSet none;
    IPluginV3* p = c->createPlugin("harness", none.get(), phase);
    check(p != nullptr, std::string(op.pluginName) + ": no fields -> defaults");
    delete p;

    FieldSet unknown;
    unknown.addFloat("bogus_field", 1.F);
    expectRejected(c, unknown, phase, "bogus_field", "unknown field");

    for (FieldExpect const& f : op.fields)
    {
        checkBadValues(c, f, phase);
    }

    // The parser passes only the creator's listed fields, but other
    // front ends may forward the node's plugin_* strings: accept them
    // when they agree, refuse them when they do not.
    FieldSet strings;
    strings.addString("plugin_namespace", "mhc");
    strings.addString("plugin_version", "1");
    p = c->createPlugin("harness", strings.get(), phase);
    check(p != nullptr, std::string(op.pluginName) + ": plugin_namespace=mhc, plugin_version=1 accepted");
    delete p;
    FieldSet wrongNs;
    wrongNs.addString("plugin_namespace", "other");
    expectRejected(c, wrongNs, phase, "plugin_namespace", "plugin_namespace=other");
}

// The runtime plugin made from ser re-serializes to the same fields.
void checkReserialized(IPluginCreatorV3One* c, OpSpec const& op, FieldSet& ser)
{
    IPluginV3* runtime = c->createPlugin("harness", ser.get(), TensorRTPhase::kRUNTIME);
    check(runtime != nullptr, std::string(op.pluginName) + ": runtime createPlugin from serialized fields");
    auto* rt2 = capability<IPluginV3OneRuntime>(runtime, PluginCapabilityType::kRUNTIME, "PLUGIN_V3ONE_RUNTIME");
    if (rt2)
    {
        FieldSet ser2;
        ser2.copyFrom(rt2->getFieldsToSerialize());
        bool same2 = ser2.get()->nbFields == ser.get()->nbFields;
        for (int32_t i = 0; same2 && i < ser.get()->nbFields; ++i)
        {
            PluginField const& a = ser.get()->fields[i];
            PluginField const* b = ser2.find(a.name);
            same2 = b && b->type == a.type && b->length == a.length && std::memcmp(a.data, b->data, 4) == 0;
        }
        check(same2, std::string(op.pluginName) + ": runtime plugin re-serializes identically");
    }
    delete runtime;
}

// Good non-default values survive getFieldsToSerialize -> runtime createPlugin.
void checkRoundTrip(IPluginCreatorV3One* c, OpSpec const& op)
{
    FieldSet good;
    std::map<std::string, double> want;
    for (FieldExpect const& f : op.fields)
    {
        if (f.type == PluginFieldType::kFLOAT32)
        {
            float const v = f.rule == FieldExpect::kPOSITIVE ? 1.75F : (f.name[0] == 'r' ? 2.5e-5F : 3e-4F);
            good.addFloat(f.name, v);
            want[f.name] = v;
        }
        else
        {
            good.addInt(f.name, 7);
            want[f.name] = 7;
        }
    }
    IPluginV3* built = c->createPlugin("harness", good.get(), TensorRTPhase::kBUILD);
    check(built != nullptr, std::string(op.pluginName) + ": non-default good values accepted");
    auto* rt = capability<IPluginV3OneRuntime>(built, PluginCapabilityType::kRUNTIME, "PLUGIN_V3ONE_RUNTIME");
    if (!rt)
    {
        delete built;
        return;
    }
    FieldSet ser;
    ser.copyFrom(rt->getFieldsToSerialize());
    bool match = ser.get()->nbFields == static_cast<int32_t>(op.fields.size());
    for (auto const& kv : want)
    {
        PluginField const* f = ser.find(kv.first);
        if (!f || f->length != 1)
        {
            match = false;
            continue;
        }
        double got = f->type == PluginFieldType::kFLOAT32 ? *static_cast<float const*>(f->data)
                                                          : *static_cast<int32_t const*>(f->data);
        match = match && got == kv.second;
    }
    check(match, std::string(op.pluginName) + ": getFieldsToSerialize returns the values given");
    delete built;
    checkReserialized(c, op, ser);
}

int modeFields(Library const& lib)
{
    for (OpSpec const& op : kOPS)
    {
        IPluginCreatorV3One* c = findCreator(lib, op.pluginName);
        check(c != nullptr, std::string("creator ") + op.pluginName + " v1 in namespace mhc");
        if (!c)
        {
            continue;
        }
        checkFieldNames(c, op);
        for (TensorRTPhase phase : {TensorRTPhase::kBUILD, TensorRTPhase::kRUNTIME})
        {
            checkFieldsInPhase(c, op, phase);
        }
        checkRoundTrip(c, op);
    }
    return gFailures ? 1 : 0;
}

int usage()
{
    std::printf(
        "usage: mhc_plugin_harness LIB list|fields|logger\n"
        "       mhc_plugin_harness LIB registry --load dlopen|loadLibrary[,...]\n"
        "       mhc_plugin_harness LIB run --op OP --dtype DT --n N --d D --T t1,t2 --dir DIR [--attr k=v]...\n"
        "                                   [--string-fields] [--no-gpu] [--verbose]\n"
        "       (--attr name:int=V | name:float=V types a field as the ONNX parser would)\n");
    return 2;
}

// ---- command line ------------------------------------------------------------------
// The options after LIB MODE; false on an unknown option or a malformed value.
bool parseArgs(int argc, char** argv, RunArgs* out, std::string* loadSteps)
{
    RunArgs& a = *out;
    for (int i = 3; i < argc; ++i)
    {
        std::string const k = argv[i];
        auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
        if (k == "--op")
        {
            a.op = next();
        }
        else if (k == "--dtype")
        {
            if (!parseDtype(next(), &a.dtype))
            {
                return false;
            }
        }
        else if (k == "--n")
        {
            a.n = std::stoll(next());
        }
        else if (k == "--d")
        {
            a.d = std::stoll(next());
        }
        else if (k == "--T")
        {
            std::stringstream ss(next());
            std::string item;
            while (std::getline(ss, item, ','))
            {
                a.ts.push_back(std::stoll(item));
            }
        }
        else if (k == "--dir")
        {
            a.dir = next();
        }
        else if (k == "--attr")
        {
            std::string const kv = next();
            size_t const eq = kv.find('=');
            if (eq == std::string::npos)
            {
                return false;
            }
            a.attrs.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
        }
        else if (k == "--string-fields")
        {
            a.stringFields = true;
        }
        else if (k == "--no-gpu")
        {
            a.gpu = false;
        }
        else if (k == "--load")
        {
            *loadSteps = next();
        }
        else if (k == "--verbose")
        {
            gLogger.mVerbose = true;
        }
        else
        {
            return false;
        }
    }
    return true;
}
} // namespace

int main(int argc, char** argv)
{
    if (argc < 3)
    {
        return usage();
    }
    std::string const mode = argv[2];
    RunArgs a;
    std::string loadSteps = "dlopen";
    if (!parseArgs(argc, argv, &a, &loadSteps))
    {
        return usage();
    }
    std::printf("mhc_plugin_harness (TensorRT headers %d.%d.%d)\n", NV_TENSORRT_MAJOR, NV_TENSORRT_MINOR,
        NV_TENSORRT_PATCH);
    if (mode == "registry")
    {
        int const rc = modeRegistry(argv[1], loadSteps);
        std::printf("%s: %d check(s) failed\n", gFailures ? "FAILED" : "OK", gFailures);
        return rc;
    }
    Library lib;
    if (!loadLibrary(argv[1], &lib))
    {
        return 1;
    }
    int rc = 2;
    if (mode == "list")
    {
        rc = modeList(lib);
    }
    else if (mode == "fields")
    {
        rc = modeFields(lib);
    }
    else if (mode == "logger")
    {
        rc = modeLogger(lib);
    }
    else if (mode == "run")
    {
        rc = modeRun(lib, a);
    }
    else
    {
        return usage();
    }
    std::printf("%s: %d check(s) failed\n", gFailures ? "FAILED" : "OK", gFailures);
    return rc != 0 ? rc : (gFailures ? 1 : 0);
}
