#include "mhcRegistration.h"

#include "mhcPluginCommon.h"

#include <dlfcn.h>
#include <link.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

namespace mhc
{
namespace plugin
{
namespace
{
// The libraries that implement TensorRT's C entry points, in the order to try.
char const* const kTENSORRT_LIBS[] = {"libnvinfer.so", "libtensorrt_rtx.so", "libnvinfer_lean.so"};

// A symbol from the global scope, else from a loaded TensorRT library.
void* findTensorRTSymbol(char const* name, std::string* where) noexcept
{
    if (void* sym = dlsym(RTLD_DEFAULT, name))
    {
        Dl_info info{};
        if (where && dladdr(sym, &info) && info.dli_fname)
        {
            *where = info.dli_fname;
        }
        return sym;
    }
    std::vector<std::string> loaded;
    dl_iterate_phdr(
        [](dl_phdr_info* info, size_t, void* data) -> int {
            if (info->dlpi_name && *info->dlpi_name)
            {
                static_cast<std::vector<std::string>*>(data)->emplace_back(info->dlpi_name);
            }
            return 0;
        },
        &loaded);
    for (char const* prefix : kTENSORRT_LIBS)
    {
        for (std::string const& path : loaded)
        {
            std::string const base = path.substr(path.rfind('/') + 1);
            if (base.rfind(prefix, 0) != 0)
            {
                continue;
            }
            // RTLD_NOLOAD: a handle to the copy already loaded, never a new one.
            if (void* h = dlopen(path.c_str(), RTLD_LAZY | RTLD_NOLOAD))
            {
                void* sym = dlsym(h, name);
                dlclose(h);
                if (sym)
                {
                    if (where)
                    {
                        *where = path;
                    }
                    return sym;
                }
            }
        }
    }
    return nullptr;
}

// The logger of a library loaded by dlopen alone (no setLoggerFinder from
// TensorRT): TensorRT's exported getLogger, asked at each message.
class LoadTimeLoggerFinder : public nvinfer1::ILoggerFinder
{
public:
    using GetLoggerFn = nvinfer1::ILogger* (*) ();
    nvinfer1::ILogger* findLogger() override
    {
        return mGetLogger ? mGetLogger() : nullptr;
    }
    GetLoggerFn mGetLogger{nullptr};
};
LoadTimeLoggerFinder gLoadTimeFinder;

std::mutex gMutex;
nvinfer1::IPluginRegistry* gRegistry{nullptr}; // the registry the load-time registration used
std::vector<nvinfer1::IPluginCreatorInterface*> gRegistered;
} // namespace

int32_t runningTensorRTMajor(void const* hint, std::string* where) noexcept
{
    using MajorFn = int32_t (*)();
    void* sym = findTensorRTSymbol("getInferLibMajorVersion", where);
    if (!sym && hint)
    {
        Dl_info info{};
        void const* vtable = *static_cast<void const* const*>(hint);
        if (dladdr(vtable, &info) && info.dli_fname)
        {
            if (void* h = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD))
            {
                sym = dlsym(h, "getInferLibMajorVersion");
                dlclose(h);
                if (sym && where)
                {
                    *where = info.dli_fname;
                }
            }
        }
    }
    return sym ? reinterpret_cast<MajorFn>(sym)() : -1;
}

bool isTensorRTRtx(int32_t runningMajor) noexcept
{
    return runningMajor >= 1 && runningMajor < 10;
}

int32_t interfaceMajor(int32_t runningMajor) noexcept
{
    return isTensorRTRtx(runningMajor) ? 11 : runningMajor;
}

std::string describeTensorRT(int32_t runningMajor)
{
    if (runningMajor < 0)
    {
        return "an unknown TensorRT";
    }
    return (isTensorRTRtx(runningMajor) ? "TensorRT-RTX " : "TensorRT ") + std::to_string(runningMajor);
}

void registerOnLoad(CreatorListFn list) noexcept
{
    try
    {
        char const* env = std::getenv(kREGISTER_ON_LOAD_ENV);
        if (env && std::strcmp(env, "0") == 0)
        {
            return;
        }
        std::string where;
        using RegistryFn = nvinfer1::IPluginRegistry* (*) ();
        auto getRegistry = reinterpret_cast<RegistryFn>(findTensorRTSymbol("getPluginRegistry", &where));
        if (!getRegistry)
        {
            return; // no TensorRT loaded yet: its loadLibrary will call getCreators
        }
        int32_t const running = runningTensorRTMajor(nullptr, nullptr);
        if (interfaceMajor(running) != NV_TENSORRT_MAJOR)
        {
            // Another major's IPluginRegistry has another vtable: never call it.
            std::fprintf(stderr,
                "[mhc plugins] not registering with %s (%s): this library was built against TensorRT %d "
                "headers; load libmhc_trt_plugins_trt%d.so instead.\n",
                describeTensorRT(running).c_str(), where.c_str(), NV_TENSORRT_MAJOR,
                running < 0 ? NV_TENSORRT_MAJOR : interfaceMajor(running));
            return;
        }
        nvinfer1::IPluginRegistry* registry = getRegistry();
        if (!registry)
        {
            return;
        }
        std::lock_guard<std::mutex> lock(gMutex);
        int32_t nb = 0;
        nvinfer1::IPluginCreatorInterface* const* creators = list(nb);
        for (int32_t i = 0; i < nb; ++i)
        {
            if (registry->registerCreator(*creators[i], kPLUGIN_NAMESPACE))
            {
                gRegistered.push_back(creators[i]);
            }
            else
            {
                auto const* c = static_cast<nvinfer1::IPluginCreatorV3One const*>(creators[i]);
                logWarning(std::string(c->getPluginName()) + " was not registered at load time (a creator of "
                    "that name, version and namespace is registered already)");
            }
        }
        gRegistry = registry;
        gLoadTimeFinder.mGetLogger
            = reinterpret_cast<LoadTimeLoggerFinder::GetLoggerFn>(findTensorRTSymbol("getLogger", nullptr));
        if (gLoadTimeFinder.mGetLogger)
        {
            setLoggerFinder(&gLoadTimeFinder); // TensorRT's loadLibrary replaces it with its own
        }
    }
    catch (...)
    {
    }
}

nvinfer1::IPluginCreatorInterface* const* handOverCreators(CreatorListFn list, int32_t& nbCreators) noexcept
{
    try
    {
        std::lock_guard<std::mutex> lock(gMutex);
        for (nvinfer1::IPluginCreatorInterface* c : gRegistered)
        {
            gRegistry->deregisterCreator(*c);
        }
        gRegistered.clear();
        gRegistry = nullptr;
    }
    catch (...)
    {
    }
    return list(nbCreators);
}

} // namespace plugin
} // namespace mhc
