// mode run: the full lifecycle of one op, phase by phase (mhcHarnessRun.h).
#include "mhcHarnessRun.h"

namespace mhcHarness
{
namespace
{
// The op named by --op and the sizes every phase uses; false when there is
// no such op or no T.
bool resolveCase(RunCase* rc)
{
    RunArgs const& a = rc->a;
    for (auto const& o : kOPS)
    {
        if (a.op == o.key)
        {
            rc->op = &o;
        }
    }
    if (!rc->op || a.ts.empty())
    {
        return false;
    }
    OpSpec const* op = rc->op;
    rc->tag = std::string(op->pluginName) + " " + typeName(a.dtype) + " n=" + std::to_string(a.n)
        + " d=" + std::to_string(a.d);
    rc->nbIn = static_cast<int32_t>(op->inputs.size());
    rc->nbOut = static_cast<int32_t>(op->outputs.size());
    rc->nbIO = rc->nbIn + rc->nbOut;
    rc->maxT = *std::max_element(a.ts.begin(), a.ts.end());
    rc->optT = (rc->maxT + 1) / 2;
    return true;
}

// The --attr values as creator fields, typed as the parser would pass them;
// plainAttrs keeps name=value for the serialization check. 0, or 2 on a usage error.
int fieldsFromAttrs(
    RunCase const& rc, FieldSet* attrs, std::vector<std::pair<std::string, std::string>>* plainAttrs)
{
    // TensorRT's ONNX parser types each field from the ONNX attribute's own type
    // (INT -> kINT32, FLOAT -> kFLOAT32), never from getFieldNames: the caller
    // says the type (--attr name:int=7); without one, the spec's kind is used.
    for (auto const& kv : rc.a.attrs)
    {
        std::string name = kv.first;
        std::string kind;
        size_t const colon = name.find(':');
        if (colon != std::string::npos)
        {
            kind = name.substr(colon + 1);
            name = name.substr(0, colon);
        }
        if (kind.empty())
        {
            for (FieldExpect const& f : rc.op->fields)
            {
                if (name == f.name)
                {
                    kind = f.type == PluginFieldType::kINT32 ? "int" : "float";
                }
            }
        }
        if (kind == "int")
        {
            attrs->addInt(name, static_cast<int32_t>(std::stol(kv.second)));
        }
        else if (kind == "float")
        {
            attrs->addFloat(name, std::stof(kv.second));
        }
        else
        {
            std::printf("usage: --attr %s needs a type (name:int=V or name:float=V)\n", name.c_str());
            return 2;
        }
        plainAttrs->emplace_back(name, kv.second);
    }
    if (rc.a.stringFields)
    {
        attrs->addString("plugin_namespace", "mhc");
        attrs->addString("plugin_version", "1");
    }
    return 0;
}
} // namespace

bool tied(OpSpec const& op, char code, bool knownT)
{
    if (code != 'T' && code != 'n' && code != 'd')
    {
        return true; // M, K or a digit
    }
    if (code == 'T' && !knownT)
    {
        return false;
    }
    int uses = 0;
    for (TensorSpec const& s : op.inputs)
    {
        for (char const* c = s.shape; *c; ++c)
        {
            uses += *c == code || (code != 'T' && (*c == 'K' || (code == 'n' && *c == 'M')));
        }
    }
    return uses > 1;
}

void descsAt(RunCase const& rc, std::vector<DynamicPluginTensorDesc> const& io, int64_t t,
    std::vector<PluginTensorDesc>& in, std::vector<PluginTensorDesc>& out)
{
    in.assign(rc.nbIn, PluginTensorDesc{});
    out.assign(rc.nbOut, PluginTensorDesc{});
    for (int32_t i = 0; i < rc.nbIO; ++i)
    {
        PluginTensorDesc& dsc = i < rc.nbIn ? in[i] : out[i - rc.nbIn];
        dsc = io[i].desc;
        dsc.dims = dimsOf(i < rc.nbIn ? rc.op->inputs[i] : rc.op->outputs[i - rc.nbIn], t, rc.a.n, rc.a.d);
    }
}

int modeRun(Library const& lib, RunArgs const& a)
{
    RunCase rc(a);
    if (!resolveCase(&rc))
    {
        std::printf("usage: run --op pre|sinkhorn|post|head --T t1,t2 ...\n");
        return 2;
    }

    // 1. creator and its fields; attributes arrive as the parser would pass them.
    IPluginCreatorV3One* creator = findCreator(lib, rc.op->pluginName);
    check(creator != nullptr, rc.tag + ": creator found by name/version/namespace");
    if (!creator)
    {
        return 1;
    }
    PluginFieldCollection const* names = creator->getFieldNames();
    FieldSet attrs;
    std::vector<std::pair<std::string, std::string>> plainAttrs;
    if (int const status = fieldsFromAttrs(rc, &attrs, &plainAttrs))
    {
        return status;
    }

    // 2.-5. build phase, up to the serialized fields.
    BuildResult built;
    FieldSet serialized;
    if (int const status = runBuildPhase(rc, creator, attrs, names, plainAttrs, &built, &serialized))
    {
        return status;
    }

    // 6. runtime phase: deserialize, attach to a context, shapes, enqueue.
    return runRuntimePhase(rc, creator, serialized, built);
}
} // namespace mhcHarness
